"""Act: the proposer suggests input experiments; the subject model runs them; a rule judges them."""

from __future__ import annotations

from collections.abc import Callable
from statistics import mean
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from autointerp.activations import normalize_activations
from autointerp.errors import LLMError
from autointerp.experiments.context import Proposer, Verdict
from autointerp.explain.explainer import marked_text
from autointerp.llm.guided import WORD_EXCEPT

FIRES_LEVEL = 2.0
"""Mean normalised activation (0-10) above which the 'should activate' texts count as firing."""


class ProposalParseError(LLMError):
    """The proposer's answer is not the JSON asked for."""


class InputProposal(BaseModel):
    """Texts the proposer predicts will and will not activate the feature."""

    model_config = ConfigDict(extra="forbid")
    activating: list[str] = Field(min_length=1)
    """Texts predicted to activate the feature."""
    non_activating: list[str] = Field(min_length=1)
    """Texts predicted not to activate it."""

    @field_validator("activating", "non_activating")
    @classmethod
    def _clean(cls, texts: list[str]) -> list[str]:
        cleaned = [t.strip() for t in texts if isinstance(t, str) and t.strip()]
        if not cleaned:
            raise ValueError("needs at least one non-empty text")
        return cleaned


MAX_SENTENCE_CHARS = 300
SENTENCE_SHAPE = "sentence"
"""The answer shape of `parse_sentence` (`autointerp.llm.guided`): text, then the closing quote."""
WORD_SHAPE = "word"
"""The answer shape of `parse_replacement_word`: one word, then the closing quote."""
WORD_LIST_SHAPE = "words-3"
"""The answer shape of `parse_word_list` for `predict_output.jinja` (three words, separated by commas)."""


def parse_sentence(answer: str) -> str:
    """Returns the sentence the answer starts with (up to the closing quote or line end)."""
    lines = answer.split('"')[0].strip().splitlines()
    sentence = lines[0].strip() if lines else ""
    if len(sentence) < 3 or not any(ch.isalpha() for ch in sentence):
        raise ProposalParseError(f"{sentence!r} is not a sentence; write one short sentence in quotes")
    if len(sentence) > MAX_SENTENCE_CHARS:
        raise ProposalParseError(f"the sentence is {len(sentence)} characters; keep it under {MAX_SENTENCE_CHARS}")
    return sentence


def parse_replacement_word(answer: str) -> str:
    """Returns the single word an answer starts with (up to a quote or space); raises ProposalParseError."""
    head = answer.split('"')[0].strip().split()
    word = head[0].strip(".,;:!?'`()") if head else ""
    if not word or len(word) > 30 or not any(ch.isalnum() for ch in word):
        raise ProposalParseError(f"{answer.strip()[:40]!r} is not a word; answer with one word in quotes")
    return word


def replacement_shape(token: str) -> str:
    """Returns the answer shape of a minimal pair's replacement for `token`: one word that is not the token
    itself (`word-except:<token>`), so that a local model's decoding cannot answer with no edit at all."""
    word = token.strip().lower()
    return f"{WORD_EXCEPT}{word}" if word else WORD_SHAPE


def replacement_parser(token: str) -> Callable[[str], str]:
    """Returns a parser of a minimal-pair answer that also rejects `token` itself (no edit at all)."""

    def parse(answer: str) -> str:
        word = parse_replacement_word(answer)
        if word.lower() == token.strip().lower():
            raise ProposalParseError(f"{word!r} is the token itself; give a different word")
        return word

    return parse


def propose_inputs(
    proposer: Proposer, explanation: str, exemplars: list[dict[str, Any]], max_activation: float, per_side: int
) -> InputProposal | None:
    """Returns the texts proposed to activate / not activate the feature, or None if a side got none.

    Each text is asked for separately, so the structure never depends on the model writing
    valid JSON (SmolLM2-135M cannot); the pipeline assembles the proposal.
    """
    shown = [
        {"marked_text": marked_text(e["tokens"], normalize_activations(e["activations"], max_activation))}
        for e in exemplars
    ]
    sides: dict[str, list[str]] = {"activating": [], "non_activating": []}
    for side, texts in sides.items():
        for _ in range(per_side):
            values = {"explanation": explanation, "exemplars": shown, "side": side, "previous": texts}
            sentence = proposer.ask("propose", values, parse_sentence, shape=SENTENCE_SHAPE)
            if sentence is not None and sentence not in texts:
                texts.append(sentence)
    if not sides["activating"] or not sides["non_activating"]:
        return None
    return InputProposal(**sides)


def input_experiment_verdict(activating_levels: list[float], non_activating_levels: list[float]) -> Verdict:
    """Returns the rule's verdict on normalised (0-10) max activations of the two text sets.

    supports: the 'should activate' texts fire (mean >= FIRES_LEVEL) and more than the others;
    refutes: they do not fire (mean < 1), or fire only weakly and no more than the others;
    inconclusive: they fire weakly but more than the others, or both sets fire (the 'should not'
    texts may hold what the explanation names: a weak proposer's mistake is no evidence).
    """
    on, off = mean(activating_levels), mean(non_activating_levels)
    if on >= FIRES_LEVEL and on > off:
        return "supports"
    if on < 1.0 or (on < FIRES_LEVEL and on <= off):
        return "refutes"
    return "inconclusive"


def run_input_experiment(
    proposal: InputProposal,
    max_activation_of: Callable[[str], float],
    feature_max: float,
) -> tuple[dict[str, Any], Verdict]:
    """Returns (measured outcome, verdict) of running the proposal's texts on the subject model."""
    measured: dict[str, Any] = {}
    levels: dict[str, list[float]] = {}
    for side in ("activating", "non_activating"):
        texts = getattr(proposal, side)
        raw = [max_activation_of(text) for text in texts]
        levels[side] = [min(10.0, 10.0 * max(a, 0.0) / feature_max) if feature_max > 0 else 0.0 for a in raw]
        measured[side] = [
            {"text": t, "max_activation": a, "level": round(level, 2)}
            for t, a, level in zip(texts, raw, levels[side], strict=True)
        ]
    verdict = input_experiment_verdict(levels["activating"], levels["non_activating"])
    measured["mean_level_activating"] = round(mean(levels["activating"]), 3)
    measured["mean_level_non_activating"] = round(mean(levels["non_activating"]), 3)
    return measured, verdict


INPUT_PREDICTION = {"activating": "fires", "non_activating": "does not fire"}
"""What an input experiment predicts of each side."""


# --- output-side experiments: ablation and steering ------------------------------------------

MIN_EFFECT_KL = 1e-4
"""Mean KL (nats) below which an intervention is taken to change nothing."""


def parse_word_list(answer: str, limit: int = 5) -> list[str]:
    """Returns up to `limit` words from a comma- or newline-separated answer; raises ProposalParseError."""
    first_lines = ",".join(answer.strip().splitlines()[:2])
    words: list[str] = []
    for part in first_lines.replace(";", ",").split(","):
        word = part.strip().strip("\"'`.").strip()
        if word and any(ch.isalpha() for ch in word) and len(word) <= 30 and word.lower() not in words:
            words.append(word.lower())
    if not words:
        raise ProposalParseError(f"{answer.strip()[:60]!r} holds no words; answer with words separated by commas")
    return words[:limit]


def words_match(predicted: list[str], tokens: list[str]) -> list[str]:
    """Returns the predicted words that one of the tokens spells (case and spaces ignored, prefixes >= 3 letters)."""
    cleaned = [t.strip().lower() for t in tokens]
    hits = []
    for word in predicted:
        if any(tok and (tok == word or (len(tok) >= 3 and word.startswith(tok))) for tok in cleaned):
            hits.append(word)
    return hits


def output_verdict(effect_kl: float, predicted: list[str], changed_tokens: list[str]) -> Verdict:
    """Returns the rule's verdict on an ablation or steering experiment.

    inconclusive: the intervention barely changes the output (mean KL < MIN_EFFECT_KL);
    supports: a predicted word is among the most changed tokens; refutes: none is.
    """
    if effect_kl < MIN_EFFECT_KL:
        return "inconclusive"
    return "supports" if words_match(predicted, changed_tokens) else "refutes"


def minimal_pair_verdict(original: float, edited: float) -> Verdict:
    """Returns supports when the edit removes at least half of the activation at the token,
    refutes when at least 80% remains, inconclusive in between (or when it never fired)."""
    if original <= 0:
        return "inconclusive"
    remaining = max(edited, 0.0) / original
    if remaining <= 0.5:
        return "supports"
    if remaining >= 0.8:
        return "refutes"
    return "inconclusive"
