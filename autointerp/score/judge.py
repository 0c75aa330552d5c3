"""Yes/no judgements for detection and fuzzing, from any chat backend.

A backend that gives answer probabilities (a local model, a server with chat log-probabilities)
gives the probability of "yes" vs "no" as the answer's first token. Any other backend generates a
short answer that is parsed; an answer that is neither yes nor no is a failed call.

With `score.judge_windows_per_prompt` (`JudgeOptions.windows_per_prompt`) above 1 (as delphi does),
several windows share one prompt and the judge answers with a list, one 1 / 0 per window
(`judge_in_lists`): fewer calls and prompt tokens, no probabilities (balanced accuracy only). A list
that cannot be read, or has the wrong length, is a failed call, and every window of that prompt is failed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from autointerp.errors import LLMError
from autointerp.llm.base import ChatBackend, ChatMessage, ChatRequest
from autointerp.prompts import PromptTemplate
from autointerp.score.metrics import balanced_accuracy
from autointerp.score.ranking import auroc
from autointerp.score.registry import ScorerOptions, ScoringContext

if TYPE_CHECKING:
    from autointerp.config import ScoreConfig

YES_WORDS = ("yes", "Yes", " yes", " Yes", "YES", " YES")
NO_WORDS = ("no", "No", " no", " No", "NO", " NO")
CHOICES = {"yes": YES_WORDS, "no": NO_WORDS}
"""The judge's answers and the spellings of their first token."""


@dataclass(frozen=True)
class JudgeOptions(ScorerOptions):
    """The settings of a judging scorer (detection, fuzzing)."""

    windows_per_prompt: int = 1
    """`score.judge_windows_per_prompt`: texts the judge sees per prompt; above 1 it answers with a list."""

    @classmethod
    def from_config(cls, config: ScoreConfig) -> JudgeOptions:
        """Returns the options the `score` section sets."""
        return cls(windows_per_prompt=config.judge_windows_per_prompt)


@dataclass(frozen=True)
class Judgement:
    """The judge's answer to one prompt."""

    p_yes: float | None
    """Probability of "yes" among yes/no (local backends); 1.0 / 0.0 from a parsed answer; None on failure."""
    error: str | None = None
    """Why there is no answer (the call failed or did not parse)."""
    from_probability: bool = False
    """True when p_yes is a probability read from the model, not a parsed yes / no."""
    in_list: bool = False
    """True when the answer came from a list judging several windows in one prompt."""

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


class JudgementListError(LLMError):
    """A batched judge's answer is not a list of one yes / no per window."""


_LIST_ITEM = {"1": True, "0": False, "yes": True, "no": False, "true": True, "false": False, "y": True, "n": False}


def parse_judgement_list(answer: str, count: int) -> list[bool]:
    """Returns one decision per window from an answer like `[1, 0, 1]` (or `yes, no, yes`).

    The first bracketed list is read (an unclosed one runs to the end of its line; a prefill `[` the model
    repeated, as in `[[1, 0]`, is ignored); its items are
    1 / 0, yes / no or true / false (any case, quotes ignored). Raises JudgementListError when there is
    no such list, an item is anything else, or the list does not have exactly `count` items.
    """
    start = answer.find("[")
    body = answer[start + 1 :] if start >= 0 else answer
    end = body.find("]")
    body = body[:end] if end >= 0 else body.splitlines()[0] if body.strip() else ""
    items = [item.strip().strip("[\"'`").strip().lower() for item in re.split(r"[,;\s]+", body)]
    items = [item for item in items if item]
    unknown = [item for item in items if item not in _LIST_ITEM]
    if unknown:
        raise JudgementListError(f"item {unknown[0][:20]!r} of the list is not 1 or 0; answer like [1, 0, 1]")
    if len(items) != count:
        raise JudgementListError(f"the list has {len(items)} items for {count} texts; give one 1 or 0 per text")
    return [_LIST_ITEM[item] for item in items]


def judge_texts(
    context: ScoringContext,
    backend: ChatBackend,
    template: PromptTemplate,
    explanation: str,
    texts: list[str],
    *,
    role: str,
    explanation_id: str | None = None,
    per_prompt: int = 1,
) -> list[Judgement]:
    """Returns one judgement per text: `per_prompt` texts per prompt when above 1 (`template` is then the
    list template), else one prompt per text."""
    if per_prompt > 1:
        return judge_in_lists(
            context,
            backend,
            template,
            explanation,
            texts,
            role=role,
            explanation_id=explanation_id,
            per_prompt=per_prompt,
        )
    prompts = [template.render(explanation=explanation, text=text) for text in texts]
    return judge_prompts(context, backend, prompts, role=role, prompt_hash=template.hash, explanation_id=explanation_id)


def judge_in_lists(
    context: ScoringContext,
    backend: ChatBackend,
    template: PromptTemplate,
    explanation: str,
    texts: list[str],
    *,
    role: str,
    explanation_id: str | None = None,
    per_prompt: int = 1,
) -> list[Judgement]:
    """Returns one judgement per text, asking about `per_prompt` texts per prompt.

    Each prompt is `template` rendered with the explanation and its texts; the answer is parsed with
    `parse_judgement_list`. Prompts run in parallel under the backend's limiter; every call is recorded,
    and a list that does not parse marks its call as failed and fails each of its texts.
    """
    per_prompt = max(1, per_prompt)
    chunks = [texts[start : start + per_prompt] for start in range(0, len(texts), per_prompt)]
    recorder = context.recorder

    def answer(chunk: list[str]) -> list[Judgement]:
        messages, prefill = template.render(explanation=explanation, texts=chunk)
        request = ChatRequest(messages=messages, max_tokens=3 * len(chunk) + 8, temperature=0.0, prefill=prefill)
        response, call_id = recorder.call(
            backend,
            request,
            role=role,
            prompt_hash=template.hash,
            feature_id=context.feature_id,
            explanation_id=explanation_id,
        )
        if response is None:
            return [Judgement(p_yes=None, error="the call failed") for _ in chunk]
        try:
            decisions = parse_judgement_list(prefill + response.text, len(chunk))
        except JudgementListError as exc:
            recorder.mark_error(call_id, f"unparseable answer: {exc}")
            return [Judgement(p_yes=None, error=str(exc)) for _ in chunk]
        return [Judgement(p_yes=1.0 if yes else 0.0, in_list=True) for yes in decisions]

    return [j for chunk in context.parallel_map(answer, chunks) for j in chunk]


def judge_prompts(
    context: ScoringContext,
    backend: ChatBackend,
    prompts: list[tuple[list[ChatMessage], str]],
    *,
    role: str,
    prompt_hash: str,
    explanation_id: str | None = None,
) -> list[Judgement]:
    """Returns one judgement per prompt; every call (or batched forward pass) is recorded.

    A backend with answer probabilities gives P("yes") (a model in this process: one batched call for
    all prompts; a server: one call per prompt, in parallel); any other generates a short answer that
    is parsed, one call per prompt, in parallel.
    """
    if not prompts:
        return []
    recorder = context.recorder
    requests = [ChatRequest(messages=m, max_tokens=4, temperature=0.0, prefill=p) for m, p in prompts]
    if backend.capabilities().answer_logprobs:
        groups = [requests] if backend.max_concurrency == 1 else [[r] for r in requests]

        def ask(group: list[ChatRequest]) -> list[Judgement]:
            def describe(shares: list[dict[str, float]]) -> tuple[str, int, int]:
                return json.dumps([round(s["yes"], 4) for s in shares]), _prompt_tokens(group), 0

            shares, _ = recorder.measure(
                backend,
                lambda: backend.answer_probabilities(group, CHOICES),
                role=role,
                prompt_hash=prompt_hash,
                request={"prompts": len(group), "method": "p-yes", "last_user_message": group[-1].messages[-1].content},
                describe=describe,
                feature_id=context.feature_id,
                explanation_id=explanation_id,
            )
            if shares is None or len(shares) != len(group):
                return [Judgement(p_yes=None, error="the call failed") for _ in group]
            return [Judgement(p_yes=s["yes"], from_probability=True) for s in shares]

        return [j for group in context.parallel_map(ask, groups) for j in group]

    def answer(request: ChatRequest) -> Judgement:
        response, call_id = recorder.call(
            backend,
            request,
            role=role,
            prompt_hash=prompt_hash,
            feature_id=context.feature_id,
            explanation_id=explanation_id,
        )
        if response is None:
            return Judgement(p_yes=None, error="the call failed")
        parsed = parse_yes_no(response.text)
        if parsed is None:
            error = f"answer {response.text[:40]!r} is neither yes nor no"
            recorder.mark_error(call_id, f"unparseable answer: {error}")
            return Judgement(p_yes=None, error=error)
        return Judgement(p_yes=1.0 if parsed else 0.0)

    return context.parallel_map(answer, requests)


def _prompt_tokens(requests: list[ChatRequest]) -> int:
    """Returns a rough count of prompt tokens (4 characters each) for calls that report none."""
    return sum(len(m.content) for r in requests for m in r.messages) // 4 + 1


def judgement_metrics(
    prefix: str, labels: list[bool], judgements: list[Judgement], backend: ChatBackend
) -> tuple[dict[str, float | None], dict[str, str]]:
    """Returns (values, reasons for the undefined ones) of `<prefix>_balanced_accuracy` and
    `<prefix>_auroc` (from P(yes), where the backend gave probabilities) over the answered judgements."""
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
    if not all(j.from_probability for _, j in answered):
        why = (
            "judged several windows per prompt (a list answer has no probabilities)"
            if any(j.in_list for _, j in answered)
            else f"{backend.name} gives no token probabilities"
        )
        return values, {area: f"{why}; see balanced accuracy"}
    values[area] = auroc([float(j.p_yes or 0.0) for _, j in answered], got)
    return values, {}
