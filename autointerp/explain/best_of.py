"""Best-of-k explaining: sample k explanations, simulate each on the windows the explainer saw, keep the best.

The first candidate is the explainer's usual answer (the configured temperature, greedy by default);
the others are sampled at `explainer.best_of_temperature`. Each distinct text is scored by the run's
simulation scorer (`score.simulator`, the same prompt and mode as the score stage) on the
explanation-split windows only: the held-out score windows stay unseen until the score stage. Every
call goes through the recorder; the kept explanation's `details["best_of"]` says which candidate won
and what each scored.

With `explainer.top_tokens_candidate`, the list of the strongest tokens of the windows the explainer saw
(`autointerp.explain.top_tokens`) is one more candidate, its `source` "top tokens" (the others': explainer).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from autointerp.explain.contrastive import Contrast, explain_split
from autointerp.explain.explainer import Evidence, ExplainOutcome, explain_feature
from autointerp.explain.top_tokens import SOURCE as TOP_TOKENS
from autointerp.explain.top_tokens import TOP_TOKENS_NAMED, TOP_TOKENS_RANK, top_tokens_explanation
from autointerp.llm.base import ChatBackend, ChatResponse
from autointerp.llm.calls import CallRecorder
from autointerp.outputs.records import OutputEvidence
from autointerp.records import Explanation, new_id
from autointerp.score.registry import SCORERS
from autointerp.score.scorers import primary_value, score_candidates
from autointerp.score.simulation import SimulationOptions
from autointerp.score.windows import HeldOutWindow

if TYPE_CHECKING:
    from autointerp.config import RunConfig, TokenRanking

SELECTION_METHOD = "simulation"
"""The scorer that ranks candidates (its headline metric, `correlation_all`)."""


@dataclass(frozen=True)
class BestOf:
    """How many candidates to sample and what scores them."""

    k: int
    """The explainer's candidates per feature (1: its usual single answer, scored only against the list of the
    strongest tokens when `top_tokens` is on)."""
    temperature: float
    """Sampling temperature of candidates 2..k."""
    simulator: ChatBackend
    """The run's simulator (`score.simulator.model`)."""
    simulation: SimulationOptions = field(default_factory=SimulationOptions)
    """The simulation scorer's options (the score stage's: `SimulationOptions.from_config(config.score)`)."""
    unread: int = 0
    """Leading tokens of each window the features' source does not read (`skipped_tokens`): not scored."""
    top_tokens: bool = False
    """Also weigh the explanation that lists the windows' strongest tokens (`explainer.top_tokens_candidate`)."""
    top_tokens_named: int = TOP_TOKENS_NAMED
    """How many tokens that list names (`explainer.top_tokens_named`)."""
    top_tokens_rank: TokenRanking = TOP_TOKENS_RANK
    """How that list ranks them (`explainer.top_tokens_rank`)."""

    @classmethod
    def from_config(cls, config: RunConfig) -> BestOf:
        """Returns the run's best-of-k: `explainer.best_of` candidates, simulated by `score.simulator` with
        the score stage's simulation options."""
        from autointerp.llm.registry import get_backend
        from autointerp.subject.kinds import skipped_tokens

        return cls(
            k=config.explainer.best_of,
            temperature=config.explainer.best_of_temperature,
            simulator=get_backend(config.score.simulator.model),
            simulation=SimulationOptions.from_config(config.score),
            unread=skipped_tokens(config.features),
            top_tokens=weighs_top_tokens(config),
            top_tokens_named=config.explainer.top_tokens_named,
            top_tokens_rank=config.explainer.top_tokens_rank,
        )


def weighs_top_tokens(config: RunConfig) -> bool:
    """Returns whether the explain stage weighs the list of the strongest tokens against the explainer's
    answer: `explainer.top_tokens_candidate`, in a run that scores by simulation (its simulator weighs them)
    and whose explainer reads input windows (not `explainer.evidence = "output"`)."""
    explainer = config.explainer
    return explainer.top_tokens_candidate and explainer.evidence != "output" and "simulation" in config.score.methods


def explanation_windows(exemplars: list[dict[str, Any]], max_activation: float, unread: int = 0) -> list[HeldOutWindow]:
    """Returns the explanation-split exemplars as scoring windows (true levels 0-10, the first `unread` tokens
    not read); score-split ones are left out whatever the caller passed."""
    return [
        HeldOutWindow.measured(
            e["tokens"], e["activations"], max_activation, str(e.get("kind", "top")), int(e.get("rank", 0)), unread
        )
        for e in explain_split(exemplars)
    ]


def _best(values: list[float | None]) -> int:
    """Returns the index of the highest value (None lowest; ties: the earliest)."""
    return max(range(len(values)), key=lambda i: (values[i] is not None, values[i] or 0.0, -i))


def explain_best_of(
    backend: ChatBackend,
    recorder: CallRecorder,
    best_of: BestOf,
    *,
    feature_id: str,
    exemplars: list[dict[str, Any]],
    max_activation: float,
    max_tokens: int,
    temperature: float,
    retries: int,
    first_answer: tuple[ChatResponse | None, str] | None = None,
    contrast: Contrast | None = None,
    seen: list[dict[str, Any]] | None = None,
    evidence: Evidence = "input",
    output: OutputEvidence | None = None,
) -> ExplainOutcome:
    """Returns the best of `best_of.k` explanations, and of the list of the strongest tokens when
    `best_of.top_tokens` is on and the explainer reads input windows, by simulation on the explanation-split
    windows, with `details["best_of"]` recording every candidate (its `source`: explainer or top tokens);
    None and the last error when none of the explainer's parsed.

    `exemplars` are the windows shown as activating; `seen` (default: those and the contrast windows) are
    the windows the candidates are simulated on, explanation split only."""
    candidates: list[Explanation] = []
    attempts, error = 0, None
    for index in range(best_of.k):
        outcome = explain_feature(
            backend,
            recorder,
            feature_id=feature_id,
            exemplars=exemplars,
            max_activation=max_activation,
            max_tokens=max_tokens,
            temperature=temperature if index == 0 else best_of.temperature,
            retries=retries,
            first_answer=first_answer if index == 0 else None,
            contrast=contrast,
            evidence=evidence,
            output=output,
        )
        attempts += outcome.attempts
        if outcome.explanation is None:
            error = outcome.error
        else:
            candidates.append(outcome.explanation)
    if not candidates:
        return ExplainOutcome(explanation=None, attempts=attempts, error=error)
    sources = ["explainer"] * len(candidates)
    weighed = best_of.top_tokens and evidence != "output"
    listed = (
        top_tokens_explanation(
            explain_split(exemplars), max_activation, best_of.top_tokens_named, best_of.top_tokens_rank, best_of.unread
        )
        if weighed
        else None
    )
    if listed is not None and listed not in {c.text for c in candidates}:
        first = candidates[0]
        candidates.append(replace(first, text=listed, llm_call_id=None, id=new_id()))
        sources.append(TOP_TOKENS)
    if best_of.k == 1 and len(candidates) == 1:  # nothing to weigh it against: kept unscored
        return ExplainOutcome(explanation=candidates[0], attempts=attempts)
    if seen is None:
        seen = exemplars + (contrast.windows if contrast else [])
    windows = explanation_windows(seen, max_activation, best_of.unread)
    texts = list(dict.fromkeys(c.text for c in candidates))  # the same text is scored once
    outcomes = score_candidates(
        SELECTION_METHOD,
        texts,
        windows,
        backend=best_of.simulator,
        recorder=recorder,
        feature_id=feature_id,
        options=best_of.simulation,
    )
    by_text = {text: primary_value(SELECTION_METHOD, o) for text, o in zip(texts, outcomes, strict=True)}
    values = [by_text[c.text] for c in candidates]
    chosen = _best(values)
    kept = candidates[chosen]
    kept.details = {
        **(kept.details or {}),  # which evidence it read
        "best_of": {
            "k": best_of.k,
            "chosen": chosen,
            "scorer": outcomes[0].scorer,
            "metric": SCORERS.get(SELECTION_METHOD).headline[0],
            "windows": len(windows),
            "split": "explain",
            "candidates": [
                {"text": c.text, "score": v, "llm_call_id": c.llm_call_id, "source": source}
                for c, v, source in zip(candidates, values, sources, strict=True)
            ],
        },
    }
    return ExplainOutcome(explanation=kept, attempts=attempts)
