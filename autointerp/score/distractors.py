"""Distractor explanations: the chance level of a score is the same scorer on another feature's explanation."""

from __future__ import annotations

import bisect
import zlib
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

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


class DistractorPool(Generic[T]):
    """Every candidate sorted once, so that each feature's choice costs O(log n), not a sort of them all.

    `choose(key, text)` returns what `choose_distractors(key, [c for c in candidates if text_of(c[1]) !=
    text])` returns: a campaign of 100,000 features would otherwise sort 100,000 candidates per feature.
    Keys must be unique.
    """

    def __init__(self, candidates: Sequence[tuple[str, T]], text_of: Callable[[T], str]) -> None:
        self._items = sorted(candidates, key=lambda c: c[0])
        self._index = {key: i for i, (key, _) in enumerate(self._items)}
        self._by_text: dict[str, list[int]] = {}
        for i, (_, value) in enumerate(self._items):
            self._by_text.setdefault(text_of(value), []).append(i)  # ascending: items are sorted
        self._text_of = text_of

    def choose(self, key: str, text: str, count: int = 1) -> list[tuple[str, T]]:
        """Returns `count` candidates other than `key` whose text is not `text`, chosen deterministically."""
        excluded = set(self._by_text.get(text, ()))
        if key in self._index:
            excluded.add(self._index[key])
        skipped = sorted(excluded)
        remaining = len(self._items) - len(skipped)
        if remaining <= 0 or count <= 0:
            return []
        start = zlib.crc32(key.encode()) % remaining
        return [self._items[self._nth(skipped, (start + i) % remaining)] for i in range(min(count, remaining))]

    @staticmethod
    def _nth(skipped: list[int], position: int) -> int:
        """Returns the index of the `position`-th item that is not skipped (`skipped` sorted)."""
        index = position
        while True:
            moved = position + bisect.bisect_right(skipped, index)
            if moved == index:
                return index
            index = moved
