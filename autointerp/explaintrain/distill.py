"""Distillation: a stronger explainer's stored explanations as training examples, filtered by their scores.

An explanation is kept only when its simulation score beats its distractor's on the same held-out
windows (the one-sided bootstrap test in `score.confidence`: p < 0.05) and is above 0, as Transluce filters
its training set by simulation score. The prompt is the explain stage's, rebuilt from the run's explanation-split
windows and the feature's max activation, so the student learns to answer what the teacher was shown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from autointerp.errors import ConfigError, StoreError
from autointerp.explain.top_tokens import kept_top_tokens
from autointerp.explaintrain.examples import ExplainExample
from autointerp.metric_names import MAIN_METRIC
from autointerp.score.confidence import CHANCE_P, stored_confidence
from autointerp.store.database import Store


def beats_distractor(p_vs_distractor: float | None, score: float | None) -> bool:
    """Returns whether a score with this p-value against its distractor is kept: p < CHANCE_P (0.05) and the
    score itself above 0 (a correlation at or below 0 is at chance whatever its distractor scores). A score
    without a test (no distractor, an undefined score) is not kept."""
    tested = p_vs_distractor is not None and math.isfinite(p_vs_distractor) and p_vs_distractor < CHANCE_P
    return tested and score is not None and math.isfinite(score) and score > 0


@dataclass
class Distilled:
    """What one run gave: the kept examples, and how many explanations were dropped and why."""

    examples: list[ExplainExample]
    dropped_chance: int = 0
    """Explanations whose score did not beat its distractor (p >= 0.05) or had no test."""
    dropped_other: int = 0
    """Explanations by another explainer or a kept list of the strongest tokens, or of a feature without
    explanation windows."""


def distill_explanations(db: Path, run_id: str, teacher: str | None = None) -> Distilled:
    """Returns the explanations of `run_id` in the DuckDB file `db` (by `teacher` only, when given) whose
    simulation score beats its distractor (p < 0.05) and is above 0, as examples; raises ConfigError when none
    is kept."""
    if not db.is_file():
        raise ConfigError(f"cannot distil from {db}: no such DuckDB file")
    store = Store(db)
    try:
        explanations = store.explanations(run_id)
        scores = store.scores(run_id, MAIN_METRIC)
        features = {f.id: f for f in store.features(run_id)}
        shown = store.exemplars_by_feature(run_id, "explain")
    except StoreError as exc:
        raise ConfigError(f"cannot distil from {db}: {exc}") from None
    tests: dict[str, tuple[float | None, float | None]] = {}  # explanation id -> (p, score)
    for score in scores:
        confidence = stored_confidence(score["details"], score["value"])
        tests[score["explanation_id"]] = (confidence.p_vs_distractor, confidence.score) if confidence else (None, None)
    result = Distilled([])
    explainers = sorted({str(e["explainer"]) for e in explanations})
    for explanation in explanations:
        feature = features.get(explanation["feature_id"])
        windows = shown.get(explanation["feature_id"], [])
        written_by_other = teacher is not None and explanation["explainer"] != teacher
        # a kept list of the strongest tokens is no explainer's writing (`explainer.top_tokens_candidate`)
        if written_by_other or kept_top_tokens(explanation.get("details")) or feature is None or not windows:
            result.dropped_other += 1
            continue
        if not beats_distractor(*tests.get(explanation["id"], (None, None))):
            result.dropped_chance += 1
            continue
        result.examples.append(
            ExplainExample(
                [w.to_row() for w in windows],  # what the explain stage passes
                feature.max_activation,
                str(explanation["text"]),
                f"distill:{run_id}:{feature.id}",
            )
        )
    if not result.examples:
        wanted = f" by {teacher}" if teacher else ""
        found = f"; its explainers: {', '.join(explainers)}" if explainers else ""
        raise ConfigError(
            f"run {run_id!r} in {db} has no explanations{wanted} whose simulation score beats its distractor "
            f"(p < {CHANCE_P}) and is above 0 to distil{found}"
        )
    return result
