"""Planted features: functions of the input whose true description is known.

A planted feature maps a window's tokens (as decoded strings) to one activation per token.
They plug into the same places as real features, so explainers and scorers can be measured
against the truth. Users define their own in a Python file holding a module-level list
`PLANTED_FEATURES` of `PlantedFeature`s, loaded with `load_planted_features(path)`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from autointerp.errors import ConfigError

ActivationFunction = Callable[[Sequence[str]], list[float]]
"""Maps a window's tokens to one activation (>= 0) per token."""


@dataclass(frozen=True)
class PlantedFeature:
    """A feature with a known description and activation function."""

    name: str
    description: str
    activations: ActivationFunction
    kind: str = "token"
    """Which family it belongs to: token, class, context, position, concept."""


def _each(predicate: Callable[[str], bool]) -> ActivationFunction:
    return lambda tokens: [1.0 if predicate(t) else 0.0 for t in tokens]


BUILTIN_PLANTED_FEATURES: list[PlantedFeature] = [
    PlantedFeature("digits", "tokens that are digits", _each(lambda t: t.strip().isdigit()), "class"),
    PlantedFeature(
        "capitalised", "words that start with a capital letter", _each(lambda t: t.strip()[:1].isupper()), "class"
    ),
    PlantedFeature("the", 'the word "the"', _each(lambda t: t.strip().lower() == "the"), "token"),
]


def load_planted_features(path: Path | None = None) -> list[PlantedFeature]:
    """Returns the builtin planted features, or those listed in `PLANTED_FEATURES` of a Python file."""
    if path is None:
        return list(BUILTIN_PLANTED_FEATURES)
    if not Path(path).is_file():
        raise ConfigError(f"planted-feature file {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"autointerp_user_planted_{Path(path).stem}", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import planted-feature file {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    features = getattr(module, "PLANTED_FEATURES", None)
    if not isinstance(features, list) or not all(isinstance(f, PlantedFeature) for f in features):
        raise ConfigError(f"{path} must define PLANTED_FEATURES, a list of autointerp.planted.PlantedFeature")
    names = [f.name for f in features]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path} defines a planted feature name twice")
    return features
