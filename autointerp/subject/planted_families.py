"""Planted families and mixed planted features: ground truth for hard negatives, hard distractors and the
intruder test.

A *family* is a set of planted features that are each other's exact neighbours: they fire on related
inputs (`the` and `a`; `digits` and `colon_numbers`), so a window where one fires and the other does not is
a hard negative of the other, and a description that fits the whole family (its `vague` description, e.g.
"numbers") passes easy tests but not hard ones. A *mixed* planted feature is the union of two unrelated
features: polysemantic by construction, so the intruder test should find it incoherent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from autointerp.subject.planted import (
    BUILTIN_PLANTED_FEATURES,
    ActivationFunction,
    PlantedFeature,
)


def _word(token: str) -> str:
    return token.strip()


def _article_a(tokens: Sequence[str]) -> list[float]:
    """Fires on the word "a" / "A"."""
    return [1.0 if _word(t) in ("a", "A") else 0.0 for t in tokens]


def _colon_numbers(tokens: Sequence[str]) -> list[float]:
    """Fires on the digits of a number that follows a colon (`line: 42`, `10:30`)."""
    out, armed = [], False
    for token in tokens:
        word = _word(token)
        fired = armed and word.isdigit()
        out.append(1.0 if fired else 0.0)
        if word.endswith(":"):
            armed = True
        elif word and not word.isdigit():
            armed = False
    return out


def union(name: str, description: str, first: PlantedFeature, second: PlantedFeature) -> PlantedFeature:
    """Returns a planted feature that fires wherever `first` or `second` fires (each scaled to its own max
    of 1 on the window, so neither half dominates): a polysemantic feature by construction."""

    def activations(tokens: Sequence[str]) -> list[float]:
        a, b = first.activations(list(tokens)), second.activations(list(tokens))
        top_a, top_b = max(a, default=0.0) or 1.0, max(b, default=0.0) or 1.0
        return [max(x / top_a, y / top_b) for x, y in zip(a, b, strict=True)]

    function: ActivationFunction = activations
    return PlantedFeature(name, description, function, "mixed")


_BUILTIN = {f.name: f for f in BUILTIN_PLANTED_FEATURES}

FAMILY_PLANTED_FEATURES: list[PlantedFeature] = [
    PlantedFeature("a", 'the word "a"', _article_a, "token"),
    PlantedFeature("colon_numbers", "numbers right after a colon", _colon_numbers, "context"),
]
"""Planted features added for their families (the builtins hold their neighbours)."""

MIXED_PLANTED_FEATURES: list[PlantedFeature] = [
    union(
        "mixed_of_digits",
        'the word "of", and tokens that are digits',
        _BUILTIN["of"],
        _BUILTIN["digits"],
    ),
    union(
        "mixed_keywords_underscores",
        "Python keywords, and double underscores",
        _BUILTIN["python_keywords"],
        _BUILTIN["underscores"],
    ),
    union(
        "mixed_is_brackets",
        'the word "is", and closing brackets',
        _BUILTIN["is"],
        _BUILTIN["closing_brackets"],
    ),
]
"""Unions of two unrelated planted features: incoherent on purpose (the intruder test's negatives)."""


@dataclass(frozen=True)
class PlantedFamily:
    """Planted features that are each other's exact neighbours, and a description vague enough to fit all."""

    name: str
    members: tuple[str, ...]
    vague: str
    """Fits every member (true of their union), so it cannot tell them apart."""


PLANTED_FAMILIES: list[PlantedFamily] = [
    PlantedFamily("articles", ("the", "a"), 'articles such as "the" and "a"'),
    PlantedFamily("numbers", ("digits", "colon_numbers"), "numbers"),
    PlantedFamily("brackets", ("bracket_depth", "closing_brackets"), "brackets and parentheses"),
    PlantedFamily("after a function word", ("after_the", "after_of"), 'the word after "the" or "of"'),
]


def hard_planted_features() -> list[PlantedFeature]:
    """Returns every builtin planted feature, then the family and mixed ones (what `autointerp bench --hard`
    measures)."""
    return [*BUILTIN_PLANTED_FEATURES, *FAMILY_PLANTED_FEATURES, *MIXED_PLANTED_FEATURES]


def planted_neighbours(name: str) -> list[str]:
    """Returns the other members of the families of the planted feature `name` (its exact neighbours)."""
    found: list[str] = []
    for family in PLANTED_FAMILIES:
        if name in family.members:
            found += [m for m in family.members if m != name and m not in found]
    return found


def vague_description(name: str) -> str | None:
    """Returns the vague description of the first family of `name` (None: it has no family)."""
    return next((f.vague for f in PLANTED_FAMILIES if name in f.members), None)
