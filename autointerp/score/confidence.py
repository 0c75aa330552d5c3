"""Confidence beside a score: a bootstrap interval over held-out windows, and a one-sided test against
the distractor scored on the same windows.

Windows are resampled with replacement (the unit the scorer saw), the pooled correlation is recomputed
on each draw for the explanation and for its distractor on the same draw, and:
- the interval is the 2.5th to 97.5th percentile of the explanation's values;
- `p_vs_distractor` is the share of draws where the explanation does not beat the distractor (a paired,
  one-sided bootstrap test); above 0.05 the explanation is indistinguishable from chance.

A score at or below 0 is at chance whatever its distractor scores (`like_chance`): a correlation that
predicts nothing is not made better by a distractor that predicts less.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from autointerp.metric_names import HARD_SUFFIX, MAIN_METRIC
from autointerp.records import stored_json
from autointerp.score.windows import read_part, scored_prediction

RESAMPLES = 400
CHANCE_P = 0.05
"""`p_vs_distractor` above this: the score is not distinguishable from its distractor's."""


CONFIDENCE_METRICS = (MAIN_METRIC, MAIN_METRIC + HARD_SUFFIX)
"""The metrics whose value a stored confidence belongs to: the simulation's headline on the held-out windows, with
the usual or the hard negatives. The outcome's other metrics carry the same details; their values are not its score."""


def _not_above_zero(score: float | None) -> bool:
    return score is not None and math.isfinite(score) and score <= 0


def like_chance(p_vs_distractor: float | None, score: float | None = None) -> bool:
    """The chance rule beside a correlation score: True when the one-sided test against the distractor gives p
    above CHANCE_P, or when the score itself is at or below 0. A missing or non-finite p or score adds nothing:
    no p (no distractor) with a positive score is never chance-level."""
    if _not_above_zero(score):
        return True
    return p_vs_distractor is not None and math.isfinite(p_vs_distractor) and p_vs_distractor > CHANCE_P


def chance_note(p_vs_distractor: float | None, score: float | None = None) -> str:
    """Returns what a chance-level flag (`like_chance`) says on hover."""
    if _not_above_zero(score):
        return f"a correlation of {score:.2f} predicts nothing: at or below 0, whatever its distractor scores"
    return (
        f"not distinguishable from its distractor at p < {CHANCE_P} "
        f"(one-sided bootstrap test: p = {p_vs_distractor if p_vs_distractor is not None else math.nan:.2f})"
    )


def like_chance_sql(p_column: str, score_column: str) -> str:
    """Returns `like_chance` as a DuckDB boolean expression (never NULL) over DOUBLE columns: the p-value and
    the score it sits beside (NULL where the score has no stored confidence, so the rule reads p alone)."""
    p_rule = f"(isfinite({p_column}) AND {p_column} > {CHANCE_P!r})"
    return f"coalesce({p_rule} OR (isfinite({score_column}) AND {score_column} <= 0), false)"


@dataclass(frozen=True)
class Confidence:
    """A score's bootstrap interval and its test against the distractor."""

    low: float
    high: float
    half_width: float
    """Half the interval's width: what `0.62 ± 0.08` shows."""
    p_vs_distractor: float | None
    """Share of draws where the explanation does not beat the distractor; None without a distractor."""
    resamples: int
    """Draws on which the score was defined."""

    def as_details(self, score: float | None = None) -> dict[str, Any]:
        """Returns the JSON stored in a score's `details.confidence`, with the chance rule's verdict beside
        `score` (readers apply the rule again rather than read it)."""
        return {
            **{k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()},
            "like_chance": like_chance(self.p_vs_distractor, score),
        }


def _percentile(sorted_values: list[float], q: float) -> float:
    index = q * (len(sorted_values) - 1)
    low, high = int(index), min(int(index) + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (index - low)


TIE = 1e-9
"""Correlations this close count as equal: a tie is a loss to the distractor, however the sums rounded."""


def _resampled_correlations(
    counts: np.ndarray, true: Sequence[Sequence[float]], predicted: Sequence[Sequence[float]]
) -> np.ndarray:
    """Returns, per resample (a row of `counts`: how often each window was drawn), the pooled correlation of
    `predicted` with `true` over the drawn windows, as `pooled_correlation` gives it (NaN where it is None:
    a flat truth; 0.0 for a flat prediction), from per-window sums in one matrix product."""
    stats = np.zeros((len(true), 6))
    lows, highs = np.zeros((len(true), 2)), np.zeros((len(true), 2))
    for i, (t_list, p_list) in enumerate(zip(true, predicted, strict=True)):
        t, p = np.asarray(t_list, dtype=np.float64), np.asarray(p_list, dtype=np.float64)
        if t.shape != p.shape:
            raise ValueError(f"true and predicted lengths differ: {t.shape} vs {p.shape}")
        stats[i] = (t.size, t.sum(), p.sum(), (t * t).sum(), (p * p).sum(), (t * p).sum())
        if t.size:
            lows[i], highs[i] = (t.min(), p.min()), (t.max(), p.max())
        else:
            lows[i], highs[i] = np.inf, -np.inf
    size, st, sp, stt, spp, stp = (counts @ stats).T
    drawn = counts > 0
    low = np.where(drawn[:, :, None], lows[None], np.inf).min(axis=1)
    high = np.where(drawn[:, :, None], highs[None], -np.inf).max(axis=1)
    flat_true, flat_pred = high[:, 0] <= low[:, 0], high[:, 1] <= low[:, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        cov = size * stp - st * sp
        var_t, var_p = size * stt - st * st, size * spp - sp * sp
        r = np.clip(cov / np.sqrt(np.maximum(var_t, 0.0) * np.maximum(var_p, 0.0)), -1.0, 1.0)
    r = np.where(flat_pred, 0.0, r)
    return np.where(flat_true | (size < 2), np.nan, r)


@lru_cache(maxsize=64)
def _draw_counts(n: int, resamples: int, seed: int) -> np.ndarray:
    """Returns how often each of `n` windows is drawn in each resample (resamples x n, read-only): the same
    draws as one pooled_correlation per resample. They depend only on (n, resamples, seed), so every
    feature with as many windows shares them: drawing them per feature cost more client CPU than its calls."""
    rng = random.Random(seed)
    counts = np.zeros((resamples, n))
    for row in range(resamples):
        for _ in range(n):
            counts[row, rng.randrange(n)] += 1
    counts.setflags(write=False)
    return counts


def bootstrap_confidence(
    true: Sequence[Sequence[float]],
    predicted: Sequence[Sequence[float]],
    distractor: Sequence[Sequence[float]] | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Confidence | None:
    """Returns the bootstrap interval of the pooled correlation of `predicted` with `true` (one list per
    window) and, with the distractor's predictions on the same windows, the paired one-sided p-value;
    None when fewer than 2 windows or the score is undefined on nearly every draw."""
    n = len(true)
    if n < 2:
        return None
    counts = _draw_counts(n, resamples, seed)
    mine = _resampled_correlations(counts, true, predicted)
    kept = ~np.isnan(mine)
    values: list[float] = mine[kept].tolist()
    losses = compared = 0
    if distractor is not None:
        other = _resampled_correlations(counts, true, distractor)[kept]
        compared = int(kept.sum())
        losses = int(np.sum(~np.isnan(other) & (mine[kept] <= other + TIE)))
    if len(values) < resamples // 2:
        return None
    values.sort()
    low, high = _percentile(values, 0.025), _percentile(values, 0.975)
    p = None if distractor is None or not compared else losses / compared
    return Confidence(low=low, high=high, half_width=(high - low) / 2, p_vs_distractor=p, resamples=len(values))


def simulation_confidence(details: dict[str, Any], distractor_details: dict[str, Any] | None) -> Confidence | None:
    """Returns the confidence of a simulation outcome's top-and-random score from its per-window details,
    on the predictions it was scored on (`scored_prediction`), over the tokens the source read; windows whose
    call failed, in either outcome, are left out."""
    windows = details.get("windows") or []
    others = (distractor_details or {}).get("windows") or [None] * len(windows)
    kept = []
    for w, o in zip(windows, others, strict=True):
        mine = scored_prediction(w)
        if w.get("kind") not in ("top", "random", "neighbour") or mine is None:
            continue
        other = None if o is None else scored_prediction(o)
        unread = int(w.get("unread", 0))  # the tokens the source did not read count in no correlation
        kept.append(
            (read_part(w["true"], unread), read_part(mine, unread), None if other is None else read_part(other, unread))
        )
    if distractor_details is not None:
        kept = [(true, mine, other) for true, mine, other in kept if other is not None]
    if not kept:
        return None
    return bootstrap_confidence(
        [true for true, _, _ in kept],
        [mine for _, mine, _ in kept],
        None if distractor_details is None else [other or [] for _, _, other in kept],
    )


@dataclass(frozen=True)
class StoredConfidence:
    """The parts of a stored `details.confidence` a reader shows; each None when missing or malformed."""

    half_width: float | None
    p_vs_distractor: float | None
    score: float | None = None
    """The score the confidence sits beside (None when not given)."""

    @property
    def like_chance(self) -> bool:
        """True when the score is at chance (`like_chance`): not distinguishable from its distractor, or not above 0."""
        return like_chance(self.p_vs_distractor, self.score)

    @property
    def note(self) -> str:
        """What the chance flag says on hover (`chance_note`)."""
        return chance_note(self.p_vs_distractor, self.score)


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def stored_confidence(details: Any, score: Any = None) -> StoredConfidence | None:
    """Returns the confidence in a score's details (a dict or its JSON text, as stored), beside the score's
    value `score`; None for a score without one (older runs, other scorers) or details that are not the JSON
    the scorers write."""
    details = stored_json(details)
    confidence = details.get("confidence") if isinstance(details, dict) else None
    if not isinstance(confidence, dict):
        return None
    return StoredConfidence(
        _finite(confidence.get("half_width")), _finite(confidence.get("p_vs_distractor")), _finite(score)
    )


def metric_confidence(metric: str, details: Any, score: Any) -> StoredConfidence | None:
    """Returns the confidence stored in the details of a score row of `metric`, beside its value `score`; None for
    a metric it does not belong to (a run copies the headline's confidence into every metric row of an outcome,
    but its interval and test are of CONFIDENCE_METRICS' values) or a row without one."""
    return stored_confidence(details, score) if metric in CONFIDENCE_METRICS else None


def score_text(value: float | None, half_width: float | None = None, distractor: float | None = None) -> str:
    """Returns a score as `autointerp show` and the review app print it: `0.62 ± 0.08 (distractor 0.05)`,
    each part left out when unknown, `—` for a score without a value."""
    if value is None or not math.isfinite(value):
        return "—" if value is None else str(value)
    text = f"{value:.2f}"
    if half_width is not None and math.isfinite(half_width):
        text += f" ± {half_width:.2f}"
    if distractor is not None and math.isfinite(distractor):
        text += f" (distractor {distractor:.2f})"
    return text
