"""Ranking metrics on plain arrays: AUROC as the Mann–Whitney U statistic."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """Returns the 1-based ranks of `values`, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    # Start index of each run of equal values, and the run each sorted position belongs to.
    run_starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    run_ends = np.r_[run_starts[1:], values.size]
    run_of_position = np.repeat(np.arange(run_starts.size), run_ends - run_starts)
    mean_rank = (run_starts + run_ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = mean_rank[run_of_position]
    return ranks


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """Returns the AUROC of `scores` for separating True from False labels, or None if a class is empty.

    The AUROC is the probability that a random positive scores above a random negative, a tie counting
    1/2 (the Mann–Whitney U statistic divided by n_pos·n_neg): 1.0 is perfect, 0.5 chance, 0.0 reversed.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"scores and labels must be 1-D of equal length: {s.shape} vs {y.shape}")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    rank_sum_pos = float(_average_ranks(s)[y].sum())
    u = rank_sum_pos - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)
