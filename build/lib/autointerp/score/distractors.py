"""Distractor explanations: the chance level of a score is the same scorer on another feature's explanation."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def choose_distractors(key: str, candidates: Sequence[tuple[str, T]], count: int = 1) -> list[tuple[str, T]]:
    """Returns `count` of the (key, value) candidates other than `key`, chosen deterministically.

    Candidates are sorted by key and the choice starts at an offset given by the CRC-32 of `key`, so
    the same run always pairs the same explanations, without favouring neighbouring features.
    """
    others = sorted((c for c in candidates if c[0] != key), key=lambda c: c[0])
    if not others or count <= 0:
        return []
    start = zlib.crc32(key.encode()) % len(others)
    return [others[(start + i) % len(others)] for i in range(min(count, len(others)))]
