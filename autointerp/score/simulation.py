"""Simulation scoring (Bills et al. 2023): predict per-token activations 0-10 from the explanation alone.

Two paths. "All at once", for local backends: one forward pass per batch of padded prompts reads the
simulator's probabilities of the tokens "0".."10" after every token and takes the expected value.
"Generated", for any backend without token probabilities: the simulator writes "token<TAB>value"
lines, which are parsed and aligned with the window's tokens; an answer that cannot be aligned is a
failed call, and its window is left out of the score.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass

import torch

from autointerp.activations import display_token
from autointerp.errors import LLMError
from autointerp.llm.base import ChatBackend, ChatRequest
from autointerp.llm.calls import CallRecorder
from autointerp.llm.local import LocalChatBackend
from autointerp.prompts import PromptTemplate

MIN_ALIGNED_SHARE = 0.5
"""A generated answer must give values for at least this share of the window's tokens."""


class SimulationParseError(LLMError):
    """A generated simulation cannot be aligned with the window's tokens."""


@dataclass(frozen=True)
class SimulationPrompt:
    """Token ids of one window's simulation prompt and where each value is read."""

    input_ids: list[int]
    read_positions: list[int]  # logits at these positions predict the value of each window token


def digit_token_ids(backend: LocalChatBackend) -> dict[int, int]:
    """Returns value -> token id for the values 0..10 that the tokenizer encodes as one token."""
    tokenizer = backend.subject.tokenizer
    found = {}
    for value in range(11):
        ids = tokenizer(str(value), add_special_tokens=False)["input_ids"]
        if len(ids) == 1:
            found[value] = ids[0]
    return found


def build_simulation_prompt(
    backend: LocalChatBackend, template: PromptTemplate, explanation: str, tokens: list[str]
) -> SimulationPrompt:
    """Returns the prompt "token<TAB>0<NEWLINE>..." after the instructions, with read positions."""
    tokenizer = backend.subject.tokenizer
    messages, prefill = template.render(explanation=explanation)
    ids = backend.prompt_ids(messages, prefill)
    zero_id = tokenizer("0", add_special_tokens=False)["input_ids"][-1]
    newline_ids = tokenizer("\n", add_special_tokens=False)["input_ids"]
    positions = []
    for token in tokens:
        ids.extend(tokenizer(display_token(token) + "\t", add_special_tokens=False)["input_ids"])
        positions.append(len(ids) - 1)
        ids.append(zero_id)  # placeholder; causal attention means it never influences its own read
        ids.extend(newline_ids)
    return SimulationPrompt(input_ids=ids, read_positions=positions)


@torch.inference_mode()
def simulate_many(
    backend: LocalChatBackend,
    template: PromptTemplate,
    items: list[tuple[str, list[str]]],
    batch_size: int = 8,
) -> tuple[list[list[float]], int]:
    """Returns (expected activation 0-10 per token, prompt tokens processed) for each (explanation,
    window tokens) pair; prompts of similar length are padded into one forward pass per batch."""
    model, device = backend.subject.model, backend.subject.device
    digits = digit_token_ids(backend)
    values = torch.tensor(list(digits), dtype=torch.float32, device=device)
    digit_ids = torch.tensor(list(digits.values()), device=device)
    prompts = [build_simulation_prompt(backend, template, explanation, tokens) for explanation, tokens in items]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i].input_ids))
    pad_id = backend.subject.tokenizer.pad_token_id or 0
    body, head = model.base_model, model.get_output_embeddings()
    predictions: list[list[float]] = [[] for _ in prompts]
    processed = 0
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        length = max(len(prompts[i].input_ids) for i in batch)
        ids = torch.full((len(batch), length), pad_id, dtype=torch.long, device=device)
        mask = torch.zeros_like(ids)
        for row, index in enumerate(batch):
            prompt_ids = prompts[index].input_ids
            ids[row, : len(prompt_ids)] = torch.tensor(prompt_ids, device=device)
            mask[row, : len(prompt_ids)] = 1
        hidden = body(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        for row, index in enumerate(batch):
            logits = head(hidden[row, prompts[index].read_positions]).float()  # [tokens, vocab]
            probs = torch.softmax(logits[:, digit_ids], dim=-1)
            predictions[index] = (probs @ values).tolist()
            processed += len(prompts[index].input_ids)
    return predictions, processed


def simulate_all_at_once(
    backend: LocalChatBackend,
    template: PromptTemplate,
    explanation: str,
    windows: list[list[str]],
    batch_size: int = 8,
) -> tuple[list[list[float]], int]:
    """Returns (expected activation 0-10 per token per window, prompt tokens processed)."""
    return simulate_many(backend, template, [(explanation, tokens) for tokens in windows], batch_size)


_LINE = re.compile(r"^(?P<token>.*?)(?:\t+|\s+)(?P<value>-?\d+(?:\.\d+)?)\s*$")


def parse_simulation_lines(answer: str, tokens: list[str]) -> tuple[list[float], int]:
    """Returns (value 0-10 per window token, how many tokens a line was found for).

    Lines look like "token<TAB>value"; values are clipped to 0..10. When there are exactly as many
    lines as tokens they are taken in order; otherwise each token is matched to the next line (within
    a few) whose token text is the same, and a token without one is predicted 0. Raises
    SimulationParseError when fewer than MIN_ALIGNED_SHARE of the tokens got a value.
    """
    lines = []
    for raw in answer.splitlines():
        match = _LINE.match(raw.rstrip())
        if match:
            lines.append((match["token"].strip(), min(10.0, max(0.0, float(match["value"])))))
    if len(lines) == len(tokens):
        return [value for _, value in lines], len(tokens)
    values = [0.0] * len(tokens)
    matched, cursor = 0, 0
    for i, token in enumerate(tokens):
        shown = display_token(token).strip()
        for j in range(cursor, min(cursor + 3, len(lines))):
            if lines[j][0] == shown:
                values[i], cursor = lines[j][1], j + 1
                matched += 1
                break
    if matched < MIN_ALIGNED_SHARE * len(tokens):
        raise SimulationParseError(
            f"only {matched} of {len(tokens)} tokens have a 'token<TAB>value' line; "
            "write every token on its own line followed by a tab and a number"
        )
    return values, matched


def simulate_generated(
    backend: ChatBackend,
    template: PromptTemplate,
    explanation: str,
    windows: list[list[str]],
    *,
    recorder: CallRecorder,
    feature_id: str | None,
    explanation_id: str | None = None,
    tokens_per_line: int = 6,
) -> list[list[float] | None]:
    """Returns the parsed prediction per window, None where the call failed or did not parse.

    Every call is recorded; an unparseable answer is marked as an error on its call row.
    """
    predictions: list[list[float] | None] = []
    for tokens in windows:
        messages, prefill = template.render(explanation=explanation, tokens=[display_token(t) for t in tokens])
        request = ChatRequest(messages=messages, max_tokens=tokens_per_line * len(tokens) + 8, prefill=prefill)
        response, call_id = recorder.call(
            backend,
            request,
            role="simulate",
            prompt_hash=template.hash,
            feature_id=feature_id,
            explanation_id=explanation_id,
        )
        if response is None:
            predictions.append(None)
            continue
        try:
            values, _ = parse_simulation_lines(prefill + response.text, tokens)
        except SimulationParseError as exc:
            recorder.mark_error(call_id, f"unparseable answer: {exc}")
            predictions.append(None)
            continue
        predictions.append(values)
    return predictions


def record_all_at_once(
    recorder: CallRecorder,
    backend: LocalChatBackend,
    template: PromptTemplate,
    *,
    explanation: str,
    predictions: list[list[float]],
    prompt_tokens: int,
    started: float,
    feature_id: str | None,
    explanation_id: str | None,
) -> str:
    """Records one all-at-once simulation (a forward pass, not a chat call) as an llm_calls row."""
    return recorder.record(
        role="simulate",
        backend=backend.backend,
        model=backend.model,
        prompt_hash=template.hash,
        request={"explanation": explanation, "windows": len(predictions), "method": "all-at-once"},
        response=json.dumps([[round(v, 3) for v in p] for p in predictions]),
        feature_id=feature_id,
        explanation_id=explanation_id,
        input_tokens=prompt_tokens,
        latency_s=max(time.perf_counter() - started, 1e-6),
    )
