"""Orient: build the explainer prompt from exemplars, call the explainer, parse its answer."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

from autointerp.activations import display_token, normalize_activations
from autointerp.errors import LLMError
from autointerp.explain.contrastive import Contrast
from autointerp.explain.patterns import marked_patterns
from autointerp.llm.base import ChatBackend, ChatMessage, ChatRequest, ChatResponse
from autointerp.llm.calls import CallRecorder
from autointerp.outputs.records import OutputEvidence, TokenEffect
from autointerp.prompts import PromptTemplate, load_prompt
from autointerp.records import Explanation

MAX_EXPLANATION_CHARS = 200
LEVEL_ECHO = re.compile(r"\s*\(\s*\d+(?:\.\d+)?\s*(?:\)|$)")
"""An activation level in parentheses, as the prompt's top-token summary shows them: `'where' (10)`, or
cut off by the token limit at the end of the answer: `'where' (10`."""


class ExplanationParseError(LLMError):
    """The explainer's answer is not a usable explanation."""


def marked_text(tokens: list[str], normalized: list[int]) -> str:
    """Returns the window's text with firing tokens (normalised activation >= 1) wrapped in << >>."""
    return "".join(
        f"<<{display_token(t)}>>" if level >= 1 else display_token(t)
        for t, level in zip(tokens, normalized, strict=True)
    )


def top_tokens_summary(exemplars: list[dict[str, Any]], max_activation: float, limit: int = 8) -> str:
    """Returns 'token (level), ...' for the tokens with the strongest activations, each token once."""
    levels = [normalize_activations(e["activations"], max_activation) for e in exemplars]
    return _top_tokens(exemplars, levels, limit)


def _top_tokens(exemplars: list[dict[str, Any]], normalized: list[list[int]], limit: int = 8) -> str:
    """Returns `top_tokens_summary` from each exemplar's normalised levels, computed once per prompt."""
    best: Counter[str] = Counter()
    for exemplar, levels in zip(exemplars, normalized, strict=True):
        for token, level in zip(exemplar["tokens"], levels, strict=True):
            key = display_token(token).strip() or display_token(token)
            best[key] = max(best[key], level)
    ranked = [(token, level) for token, level in best.most_common(limit) if level > 0]
    return ", ".join(f"{token!r} ({level})" for token, level in ranked) or "none"


Evidence = Literal["input", "output", "both"]
"""What the explainer reads (`explainer.evidence`): input windows, output evidence, or both."""
OUTPUT_TOKENS_SHOWN = 10
"""Tokens shown per output-evidence list."""


def explain_template(contrast: Contrast | None, evidence: Evidence = "input") -> PromptTemplate:
    """Returns the explainer's template: `explain_output` / `explain_both` for output evidence, else
    `explain_contrastive` when non-activating windows are shown, else `explain`."""
    if evidence != "input":
        return load_prompt(f"explain_{evidence}")
    return load_prompt("explain" if contrast is None else "explain_contrastive")


def evidence_shown(evidence: Evidence, output: OutputEvidence | None) -> tuple[Evidence, str | None]:
    """Returns (the evidence the explainer reads, why it falls back to input windows, or None): a feature
    without output evidence (none stored, or one that writes nothing into the model) is explained from
    its input."""
    if evidence == "input":
        return "input", None
    if output is None:
        return "input", "no output evidence stored for the feature"
    if not output.has_output:
        return "input", output.no_output_reason
    return evidence, None


def token_list(effects: tuple[TokenEffect, ...]) -> str:
    """Returns "'Monday', ' Friday', ..." for the first tokens of an output-evidence list ("none" when empty)."""
    return ", ".join(repr(e.token) for e in effects[:OUTPUT_TOKENS_SHOWN]) or "none"


def output_values(output: OutputEvidence) -> dict[str, str]:
    """Returns the output-evidence variables of the `explain_output` and `explain_both` templates."""
    return {
        "promoted": token_list(output.promoted),
        "suppressed": token_list(output.suppressed),
        "steer_raised": token_list(output.steer_raised),
        "steer_lowered": token_list(output.steer_lowered),
    }


def build_explainer_prompt(
    exemplars: list[dict[str, Any]],
    max_activation: float,
    template: PromptTemplate,
    contrast: Contrast | None = None,
    output: OutputEvidence | None = None,
) -> tuple[list[ChatMessage], str]:
    """Returns (messages, prefill) asking what the feature fires on (the windows with their marked tokens,
    the strongest tokens and what the marked tokens have in common); with `contrast` (for the
    `explain_contrastive` template), also the similar windows that do not activate it; with `output` (for
    `explain_output` and `explain_both`), what it makes the model say."""
    levels = [normalize_activations(e["activations"], max_activation) for e in exemplars]
    shown = [{"marked_text": marked_text(e["tokens"], lv)} for e, lv in zip(exemplars, levels, strict=True)]
    values: dict[str, Any] = {
        "exemplars": shown,
        "top_tokens": _top_tokens(exemplars, levels),
        "patterns": marked_patterns(exemplars, levels),
    }
    if contrast is not None:
        values["contrast"] = ["".join(display_token(t) for t in w["tokens"]) for w in contrast.windows]
        values["contrast_wanted"] = contrast.wanted
    if output is not None:
        values.update(output_values(output))
    return template.render(**values)


def _strip_stray_quotes(text: str) -> str:
    """Returns text without quotes around all of it or unmatched at either end; quoted words inside
    (the word "is") keep theirs, and so does a list of quoted words ("May", "June" and "July"), whose
    first and last quotes belong to different words."""
    for quote in '"`':  # an apostrophe may be part of a word: only stripped when wrapping all
        if text.count(quote) % 2:
            text = text.removeprefix(quote) if text.startswith(quote) else text.removesuffix(quote)
    while len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`" and text[0] not in text[1:-1]:
        text = text[1:-1].strip()
    return text.strip()


def parse_explanation(answer: str) -> str:
    """Returns the explanation phrase from the answer's first sentence; raises ExplanationParseError."""
    first_line = answer.strip().splitlines()[0] if answer.strip() else ""
    sentence = re.split(r"(?<=[a-z0-9'\"\)])\.(\s|$)", first_line, maxsplit=1)[0]
    sentence = LEVEL_ECHO.sub("", sentence)  # the prompt's "token (10)" levels echoed back
    text = _strip_stray_quotes(sentence.strip().rstrip(".").strip())
    if not text:
        raise ExplanationParseError("the answer is empty; reply with a short phrase")
    if not re.search(r"[A-Za-z]", text):
        raise ExplanationParseError(f"the answer {text!r} has no words; describe what the neuron fires on")
    if len(text) > MAX_EXPLANATION_CHARS:
        raise ExplanationParseError(f"the answer is {len(text)} characters; keep it under {MAX_EXPLANATION_CHARS}")
    return text


def explain_request(
    exemplars: list[dict[str, Any]],
    max_activation: float,
    *,
    max_tokens: int,
    temperature: float,
    contrast: Contrast | None = None,
    evidence: Evidence = "input",
    output: OutputEvidence | None = None,
) -> ChatRequest:
    """Returns the first explain request for a feature (what `explain_feature` sends first)."""
    shown, _ = evidence_shown(evidence, output)
    template = explain_template(contrast if shown == "input" else None, shown)
    messages, prefill = build_explainer_prompt(exemplars, max_activation, template, contrast, output)
    return ChatRequest(messages=messages, max_tokens=max_tokens, temperature=temperature, prefill=prefill)


@dataclass
class ExplainOutcome:
    """An explanation ready to store, or None and the last error when every attempt failed."""

    explanation: Explanation | None
    attempts: int
    error: str | None = None


def explain_feature(
    backend: ChatBackend,
    recorder: CallRecorder,
    *,
    feature_id: str,
    exemplars: list[dict[str, Any]],
    max_activation: float,
    max_tokens: int,
    temperature: float,
    retries: int,
    first_answer: tuple[ChatResponse | None, str] | None = None,
    contrast: Contrast | None = None,
    evidence: Evidence = "input",
    output: OutputEvidence | None = None,
) -> ExplainOutcome:
    """Asks the explainer; a bad answer is retried with the parse error shown to the model. Returns the
    explanation, or None and the last error once every attempt failed.

    `first_answer` is (response or None, call id) of the first attempt when it was already made (a batch
    of features generated at once, its call recorded in `recorder`); only retries call the backend then.
    `contrast`: also show these non-activating windows (the `explain_contrastive` template). `evidence`
    other than input: show the feature's `output` evidence (alone, or with the windows); the explanation's
    `details["evidence"]` says what it read (input when the feature has no output evidence, with the reason).
    """
    shown, fallback = evidence_shown(evidence, output)
    template = explain_template(contrast if shown == "input" else None, shown)
    messages, prefill = build_explainer_prompt(
        exemplars, max_activation, template, contrast if shown == "input" else None, output
    )
    error: str | None = None
    for attempt in range(1, retries + 2):
        request = ChatRequest(messages=messages, max_tokens=max_tokens, temperature=temperature, prefill=prefill)
        if attempt == 1 and first_answer is not None:
            response, call_id = first_answer
        else:
            response, call_id = recorder.call(
                backend, request, role="explain", prompt_hash=template.hash, feature_id=feature_id
            )
        if response is None:
            error = next((r.error for r in recorder.rows if r.id == call_id), None) or "the call failed"
            continue
        try:
            text = parse_explanation(response.text)
        except ExplanationParseError as exc:
            error = f"unparseable answer: {exc}"
            recorder.mark_error(call_id, error)
            messages = [
                *messages,
                ChatMessage(role="assistant", content=prefill + response.text),
                ChatMessage(role="user", content=f"That answer cannot be used: {exc}. Try again."),
            ]
            continue
        explanation = Explanation(
            run_id=recorder.run_id,
            feature_id=feature_id,
            text=text,
            explainer=backend.name,
            prompt_hash=template.hash,
            llm_call_id=call_id,
        )
        if evidence != "input":  # the default (input windows) leaves details empty
            explanation.details = {"evidence": shown, **({"evidence_fallback": fallback} if fallback else {})}
        return ExplainOutcome(explanation=explanation, attempts=attempt)
    return ExplainOutcome(explanation=None, attempts=retries + 1, error=error)
