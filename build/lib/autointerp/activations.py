"""Activation normalisation shared by prompts and scoring (Bills et al. 2023)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def normalize_activations(activations: Sequence[float], max_activation: float) -> list[int]:
    """Returns min(10, floor(10 * relu(a) / max)) per token; all zeros when max <= 0."""
    if max_activation <= 0:
        return [0 for _ in activations]
    return [min(10, math.floor(10 * max(a, 0.0) / max_activation)) for a in activations]


def display_token(token: str) -> str:
    """Returns a token with newlines and tabs made visible, for prompts and tables."""
    return token.replace("\n", "\\n").replace("\t", "\\t")
