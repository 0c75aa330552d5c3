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
