"""What a scorer returns for one explanation on one feature's held-out windows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ScoreOutcome:
    """Metric values of one explanation, with the reason for each undefined value and the evidence."""

    scorer: str
    """The `scores.scorer` value, e.g. `simulation-all-at-once`, `detection`, `embedding`."""
    scorer_model: str
    """`backend:model` of the scoring model, or the embedding model's name."""
    values: dict[str, float | None]
    """Metric name -> value; None when the metric is undefined on these windows."""
    undefined: dict[str, str] = field(default_factory=dict)
    """Metric name -> why its value is None (never 0 or NaN in silence)."""
    details: dict[str, Any] = field(default_factory=dict)
    """Per-window predictions and what else explains the values."""
    call_ids: list[str] = field(default_factory=list)
    """The llm_calls rows that produced it."""


def undefined_outcome(scorer: str, scorer_model: str, metrics: tuple[str, ...], reason: str) -> ScoreOutcome:
    """Returns an outcome whose every metric is None for the same reason."""
    return ScoreOutcome(
        scorer=scorer,
        scorer_model=scorer_model,
        values=dict.fromkeys(metrics),
        undefined=dict.fromkeys(metrics, reason),
    )
