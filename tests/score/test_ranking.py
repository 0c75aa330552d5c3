"""AUROC against hand-worked cases and a brute-force pairwise count."""

from __future__ import annotations

import numpy as np
import pytest

from autointerp.score.ranking import auroc


def brute_force_auroc(scores: list[float], labels: list[bool]) -> float:
    """Returns the fraction of (positive, negative) pairs ranked correctly, ties counting 1/2."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_perfect_separation_is_one() -> None:
    assert auroc([0.9, 0.8, 0.2, 0.1], [True, True, False, False]) == 1.0


def test_reversed_ranking_is_zero() -> None:
    assert auroc([0.1, 0.2, 0.8, 0.9], [True, True, False, False]) == 0.0


def test_all_ties_is_one_half() -> None:
    assert auroc([0.3, 0.3, 0.3, 0.3, 0.3], [True, False, True, False, False]) == 0.5


@pytest.mark.parametrize("labels", [[True, True, True], [False, False, False], []])
def test_one_class_empty_is_none(labels: list[bool]) -> None:
    assert auroc([0.5] * len(labels), labels) is None


def test_mismatched_lengths_raise() -> None:
    with pytest.raises(ValueError, match="equal length"):
        auroc([0.1, 0.2], [True])


@pytest.mark.parametrize("seed", range(5))
def test_matches_brute_force_pairwise_count(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 60
    scores = rng.integers(0, 8, size=n).astype(float).tolist()  # few distinct values: many ties
    labels = (rng.random(n) < 0.4).tolist()
    assert auroc(scores, labels) == pytest.approx(brute_force_auroc(scores, labels))
