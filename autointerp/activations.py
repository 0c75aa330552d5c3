"""Activation normalisation and the one definition of "fires", shared by collection, prompts and scoring.

A token *fires* when its activation is at least `FIRES_FRACTION` (10 %) of the feature's maximum
over the corpus: its normalised level (Bills et al. 2023) is at least `ACTIVE_LEVEL` of 10. A
feature's *density* is the share of tokens that fire. Signed features (`features.sign`) are split
into poles before this definition applies, so the `-` pole's tokens fire on relu(-a).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

FIRES_FRACTION = 0.1
"""A token fires when its activation is >= this share of the feature's max (and the max is > 0)."""

ACTIVE_LEVEL = 1
"""The normalised level (0-10) at which a token fires: floor(10 * FIRES_FRACTION)."""


def normalize_activations(activations: Sequence[float], max_activation: float) -> list[int]:
    """Returns min(10, floor(10 * relu(a) / max)) per token; all zeros when max <= 0."""
    if max_activation <= 0:
        return [0 for _ in activations]
    return [min(10, math.floor(10 * max(a, 0.0) / max_activation)) for a in activations]


def fires_threshold(max_activation: float) -> float:
    """Returns the smallest activation that fires for a feature with this max (inf when max <= 0)."""
    return FIRES_FRACTION * max_activation if max_activation > 0 else math.inf


def fires(value: float, max_activation: float) -> bool:
    """Returns whether an activation fires: value >= FIRES_FRACTION x max, with max > 0."""
    return value >= fires_threshold(max_activation)


def exact_density(activations: Iterable[Iterable[float]], max_activation: float | None = None) -> float:
    """Returns the share of tokens that fire, from every token's activation (windows of tokens).

    `max_activation` defaults to the largest activation given; 0.0 when there are no tokens."""
    values = [float(a) for window in activations for a in window]
    if not values:
        return 0.0
    peak = max(values) if max_activation is None else max_activation
    threshold = fires_threshold(peak)
    return sum(v >= threshold for v in values) / len(values)


def display_token(token: str) -> str:
    """Returns a token with newlines and tabs made visible, for prompts and tables."""
    return token.replace("\n", "\\n").replace("\t", "\\t")
