"""One entry point for every scoring method: several candidate explanations, one feature's windows.

`score_candidates` scores the real explanation and its distractors (or, in the benchmark, the true
description and other features' descriptions) on the same held-out windows, through the scorer the
registry holds for the method.
"""

from __future__ import annotations

from collections.abc import Sequence

from autointerp.llm.base import ChatBackend
from autointerp.llm.calls import CallRecorder
from autointerp.score.outcome import ScoreOutcome
from autointerp.score.registry import SCORERS, ScorerOptions, ScoringContext, SteeringTarget, get_scorer
from autointerp.score.windows import HeldOutWindow


def methods() -> list[str]:
    """Returns the names of every registered scoring method."""
    return SCORERS.names()


def primary_value(method: str, outcome: ScoreOutcome) -> float | None:
    """Returns the one number that ranks explanations for a method (its first headline metric defined)."""
    return SCORERS.get(method).headline_value(outcome)


def score_candidates(
    method: str,
    explanations: list[str],
    windows: list[HeldOutWindow],
    *,
    backend: ChatBackend | None,
    recorder: CallRecorder,
    feature_id: str | None,
    explanation_ids: Sequence[str | None] | None = None,
    options: ScorerOptions | None = None,
    steering: SteeringTarget | None = None,
) -> list[ScoreOutcome]:
    """Returns one outcome per explanation for `method`, all on the same held-out windows; `options` are
    the method's own (e.g. `SimulationOptions`; default: its defaults); `steering` is the feature a scorer
    that steers it (`output`) steers."""
    context = ScoringContext(
        explanations=explanations,
        windows=windows,
        recorder=recorder,
        backend=backend,
        feature_id=feature_id,
        explanation_ids=list(explanation_ids or []),
        steering=steering,
    )
    return get_scorer(method, options).score(context)
