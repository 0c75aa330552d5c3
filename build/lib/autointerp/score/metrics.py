"""Score metrics on plain arrays: pooled correlation as in Bills et al. (2023)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pearson_correlation(true: Sequence[float], predicted: Sequence[float]) -> float | None:
    """Returns Pearson's r; 0.0 when the prediction is constant, None when the truth is constant."""
    t = np.asarray(true, dtype=np.float64)
    p = np.asarray(predicted, dtype=np.float64)
    if t.shape != p.shape:
        raise ValueError(f"true and predicted lengths differ: {t.shape} vs {p.shape}")
    if t.size < 2 or np.ptp(t) == 0:
        return None  # nothing to predict: the feature is flat on these tokens
    if np.ptp(p) == 0:
        return 0.0  # a constant prediction carries no information
    return float(np.corrcoef(t, p)[0, 1])


def pooled_correlation(true: Sequence[Sequence[float]], predicted: Sequence[Sequence[float]]) -> float | None:
    """Returns the correlation over all tokens of all windows pooled (not averaged per window)."""
    flat_true = [v for window in true for v in window]
    flat_pred = [v for window in predicted for v in window]
    return pearson_correlation(flat_true, flat_pred)


def balanced_accuracy(labels: Sequence[bool], decisions: Sequence[bool]) -> float | None:
    """Returns the mean of the true-positive and true-negative rates; None when a class is empty."""
    if len(labels) != len(decisions):
        raise ValueError(f"labels and decisions lengths differ: {len(labels)} vs {len(decisions)}")
    positives = [d for y, d in zip(labels, decisions, strict=True) if y]
    negatives = [not d for y, d in zip(labels, decisions, strict=True) if not y]
    if not positives or not negatives:
        return None
    return (sum(positives) / len(positives) + sum(negatives) / len(negatives)) / 2.0
