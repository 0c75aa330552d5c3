"""Yes/no judgements for detection and fuzzing, from any chat backend.

A local backend gives the exact probability of "yes" vs "no" as the answer's first token: prompts
are padded into batches and one forward pass per batch reads the last position. Any other backend
generates a short answer that is parsed; an answer that is neither yes nor no is a failed call.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass

import torch

from autointerp.llm.base import ChatBackend, ChatMessage, ChatRequest
from autointerp.llm.calls import CallRecorder
from autointerp.llm.local import LocalChatBackend
from autointerp.score.metrics import balanced_accuracy
from autointerp.score.ranking import auroc

YES_WORDS = ("yes", "Yes", " yes", " Yes", "YES", " YES")
NO_WORDS = ("no", "No", " no", " No", "NO", " NO")


@dataclass(frozen=True)
class Judgement:
    """The judge's answer to one prompt."""

    p_yes: float | None
    """Probability of "yes" among yes/no (local backends); 1.0 / 0.0 from a parsed answer; None on failure."""
    error: str | None = None
    """Why there is no answer (the call failed or did not parse)."""

    @property
    def says_yes(self) -> bool | None:
        """The decision: yes when p_yes > 0.5; None on failure."""
        return None if self.p_yes is None else self.p_yes > 0.5


def parse_yes_no(answer: str) -> bool | None:
    """Returns True / False for an answer starting with yes / no (any case, punctuation ignored), else None."""
    words = re.findall(r"[A-Za-z]+", answer)
    if not words:
        return None
    first = words[0].lower()
    return True if first == "yes" else False if first == "no" else None


def _single_token_ids(backend: LocalChatBackend, words: tuple[str, ...]) -> list[int]:
    ids = set()
    for word in words:
        encoded = backend.subject.tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(encoded) == 1:
            ids.add(int(encoded[0]))
    return sorted(ids)


@torch.inference_mode()
def local_p_yes(
    backend: LocalChatBackend, prompts: list[tuple[list[ChatMessage], str]], batch_size: int = 16
) -> tuple[list[float], int]:
    """Returns (P(yes) per prompt, prompt tokens processed): one padded forward pass per batch."""
    subject = backend.subject
    model, device = subject.model, subject.device
    yes_ids = torch.tensor(_single_token_ids(backend, YES_WORDS), device=device)
    no_ids = torch.tensor(_single_token_ids(backend, NO_WORDS), device=device)
    encoded = [backend.prompt_ids(messages, prefill) for messages, prefill in prompts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # similar lengths pad less
    pad_id = subject.tokenizer.pad_token_id or 0
    body, head = model.base_model, model.get_output_embeddings()
    result = [0.0] * len(encoded)
    processed = 0
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        length = max(len(encoded[i]) for i in rows)
        ids = torch.full((len(rows), length), pad_id, dtype=torch.long, device=device)
        mask = torch.zeros_like(ids)
        for row, index in enumerate(rows):
            ids[row, : len(encoded[index])] = torch.tensor(encoded[index], device=device)
            mask[row, : len(encoded[index])] = 1
        hidden = body(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        last = torch.tensor([len(encoded[i]) - 1 for i in rows], device=device)
        logits = head(hidden[torch.arange(len(rows), device=device), last]).float()  # [rows, vocab]
        probs = torch.softmax(logits, dim=-1)
        p_yes = probs[:, yes_ids].sum(dim=-1)
        p_no = probs[:, no_ids].sum(dim=-1)
        share = (p_yes / (p_yes + p_no).clamp(min=1e-12)).tolist()
        for row, index in enumerate(rows):
            result[index] = float(share[row])
            processed += len(encoded[index])
    return result, processed


def judge_prompts(
    backend: ChatBackend,
    prompts: list[tuple[list[ChatMessage], str]],
    *,
    recorder: CallRecorder,
    role: str,
    prompt_hash: str,
    feature_id: str | None,
    explanation_id: str | None = None,
    batch_size: int = 16,
) -> list[Judgement]:
    """Returns one judgement per prompt; every call (or batched forward pass) is recorded."""
    if not prompts:
        return []
    if isinstance(backend, LocalChatBackend):
        started = time.perf_counter()
        shares, tokens = local_p_yes(backend, prompts, batch_size)
        recorder.record(
            role=role,
            backend=backend.backend,
            model=backend.model,
            prompt_hash=prompt_hash,
            request={"prompts": len(prompts), "method": "p-yes", "last_user_message": prompts[-1][0][-1].content},
            response=json.dumps([round(s, 4) for s in shares]),
            feature_id=feature_id,
            explanation_id=explanation_id,
            input_tokens=tokens,
            latency_s=time.perf_counter() - started,
        )
        return [Judgement(p_yes=s) for s in shares]
    judgements = []
    for messages, prefill in prompts:
        request = ChatRequest(messages=messages, max_tokens=4, temperature=0.0, prefill=prefill)
        response, call_id = recorder.call(
            backend, request, role=role, prompt_hash=prompt_hash, feature_id=feature_id, explanation_id=explanation_id
        )
        if response is None:
            judgements.append(Judgement(p_yes=None, error="the call failed"))
            continue
        answer = parse_yes_no(response.text)
        if answer is None:
            error = f"answer {response.text[:40]!r} is neither yes nor no"
            recorder.mark_error(call_id, f"unparseable answer: {error}")
            judgements.append(Judgement(p_yes=None, error=error))
            continue
        judgements.append(Judgement(p_yes=1.0 if answer else 0.0))
    return judgements


def judgement_metrics(
    prefix: str, labels: list[bool], judgements: list[Judgement], backend: ChatBackend
) -> tuple[dict[str, float | None], dict[str, str]]:
    """Returns (values, reasons for the undefined ones) of `<prefix>_balanced_accuracy` and
    `<prefix>_auroc` (from P(yes), local backends only) over the judgements that were answered."""
    accuracy, area = f"{prefix}_balanced_accuracy", f"{prefix}_auroc"
    values: dict[str, float | None] = {accuracy: None, area: None}
    answered = [(label, j) for label, j in zip(labels, judgements, strict=True) if j.p_yes is not None]
    if not answered:
        return values, dict.fromkeys(values, f"all {len(judgements)} {prefix} calls failed")
    got = [label for label, _ in answered]
    values[accuracy] = balanced_accuracy(got, [bool(j.says_yes) for _, j in answered])
    if values[accuracy] is None:
        failed = len(judgements) - len(answered)
        return values, dict.fromkeys(values, f"the answered items are all of one class ({failed} calls failed)")
    if not isinstance(backend, LocalChatBackend):
        return values, {area: f"{backend.name} gives no token probabilities; see balanced accuracy"}
    values[area] = auroc([float(j.p_yes or 0.0) for _, j in answered], got)
    return values, {}
