"""Planted features: functions of the input whose true description is known.

A planted feature maps a window's tokens (as decoded strings) to one activation per token.
They plug into the same places as real features, so explainers and scorers can be measured
against the truth. Users define their own in a Python file holding a module-level list
`PLANTED_FEATURES` of `PlantedFeature`s, loaded with `load_planted_features(path)`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import math
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from autointerp.errors import ConfigError, FeatureError

ActivationFunction = Callable[[Sequence[str]], list[float]]
"""Maps a window's tokens to one finite activation per token (negative values are allowed)."""


@dataclass(frozen=True)
class PlantedFeature:
    """A feature with a known description and activation function."""

    name: str
    description: str
    activations: ActivationFunction
    kind: str = "token"
    """Which family it belongs to: token, class, context, position, concept, sparse, dense."""


def _each(predicate: Callable[[str], bool]) -> ActivationFunction:
    return lambda tokens: [1.0 if predicate(t) else 0.0 for t in tokens]


def _word(token: str) -> str:
    return token.strip()


def _after(previous: Callable[[str], bool]) -> ActivationFunction:
    """Fires on a token whose preceding token satisfies `previous`."""
    return lambda tokens: (
        [0.0] + [1.0 if previous(a) and any(c.isalnum() for c in b) else 0.0 for a, b in itertools.pairwise(tokens)]
    )


def _inside_quotes(tokens: Sequence[str]) -> list[float]:
    """Fires on tokens with a letter or digit between an opening and a closing double quote."""
    out, inside = [], False
    for token in tokens:
        fired = False
        for ch in token:
            if ch in '"“”':
                inside = not inside
            elif inside and ch.isalnum():
                fired = True
        out.append(1.0 if fired else 0.0)
    return out


def _bracket_depth(tokens: Sequence[str]) -> list[float]:
    """Activation = nesting depth of (, [ or { at the token's last character (0 outside)."""
    out, depth = [], 0
    for token in tokens:
        deepest = 0
        for ch in token:
            if ch in "([{":
                depth += 1
            elif ch in ")]}":
                depth = max(0, depth - 1)
            elif not ch.isspace():
                deepest = max(deepest, depth)
        out.append(float(deepest))
    return out


def _closing_bracket_depth(tokens: Sequence[str]) -> list[float]:
    """Closing brackets, activation = the depth they close (an outermost one closes depth 1)."""
    out, depth = [], 0
    for token in tokens:
        value = 0
        for ch in token:
            if ch in "([{":
                depth += 1
            elif ch in ")]}":
                value = max(value, depth if depth > 0 else 1)
                depth = max(0, depth - 1)
        out.append(float(value))
    return out


def _position(fraction: Callable[[int, int], float]) -> ActivationFunction:
    return lambda tokens: [fraction(i, len(tokens)) for i in range(len(tokens))]


MONTHS = set(
    [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ]
)
PYTHON_KEYWORDS = set(
    [
        "def",
        "class",
        "return",
        "import",
        "lambda",
        "yield",
        "while",
        "for",
        "if",
        "elif",
        "else",
        "try",
        "except",
        "finally",
        "with",
        "pass",
        "raise",
        "global",
        "nonlocal",
        "async",
        "await",
    ]
)
NUMBER_WORDS = {"one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "zero", "hundred"}
BUILTIN_TYPES = {"int", "str", "list", "dict", "tuple", "set", "float", "bytes", "bool", "frozenset"}
PUNCTUATION = set(".,;:!?")


def _month_tokens(tokens: Sequence[str]) -> list[float]:
    """Fires on every token of a month name, even when the name is split into several tokens."""
    words = [_word(t).lower() for t in tokens]
    capital = [_word(t)[:1].isupper() for t in tokens]  # "May", not the verb "may"
    out = [0.0] * len(tokens)
    for i in range(len(tokens)):
        if not capital[i]:
            continue
        joined = ""
        for j in range(i, min(i + 3, len(tokens))):
            joined += words[j] if j == i or not tokens[j][:1].isspace() else "\0"
            if joined in MONTHS:
                for k in range(i, j + 1):
                    out[k] = 1.0
    return out


BUILTIN_PLANTED_FEATURES: list[PlantedFeature] = [
    # single tokens
    PlantedFeature("the", 'the word "the"', _each(lambda t: _word(t).lower() == "the"), "token"),
    PlantedFeature("of", 'the word "of"', _each(lambda t: _word(t) == "of"), "token"),
    PlantedFeature("is", 'the word "is"', _each(lambda t: _word(t) == "is"), "token"),
    PlantedFeature("attribute", 'the word "attribute"', _each(lambda t: _word(t) == "attribute"), "token"),
    PlantedFeature("newline", "line breaks", _each(lambda t: "\n" in t), "token"),
    # token classes
    PlantedFeature("digits", "tokens that are digits", _each(lambda t: _word(t).isdigit()), "class"),
    PlantedFeature(
        "capitalised", "words that start with a capital letter", _each(lambda t: _word(t)[:1].isupper()), "class"
    ),
    PlantedFeature(
        "punctuation", "punctuation marks such as periods and commas", _each(lambda t: _word(t) in PUNCTUATION), "class"
    ),
    PlantedFeature("underscores", "double underscores, as in __init__", _each(lambda t: "__" in t), "class"),
    PlantedFeature(
        "long_words",
        "long words of nine or more letters",
        _each(lambda t: _word(t).isalpha() and len(_word(t)) >= 9),
        "class",
    ),
    PlantedFeature(
        "error_names",
        "names of exception classes ending in Error",
        _each(lambda t: _word(t).endswith("Error")),
        "class",
    ),
    # context-dependent
    PlantedFeature("after_of", 'the word right after "of"', _after(lambda t: _word(t) == "of"), "context"),
    PlantedFeature("after_the", 'the word right after "the"', _after(lambda t: _word(t).lower() == "the"), "context"),
    PlantedFeature("after_period", "the first word of a new sentence", _after(lambda t: _word(t) == "."), "context"),
    PlantedFeature("in_quotes", "words inside double quotation marks", _inside_quotes, "context"),
    PlantedFeature(
        "bracket_depth",
        "text inside parentheses or brackets, more strongly the deeper it is nested",
        _bracket_depth,
        "context",
    ),
    PlantedFeature(
        "closing_brackets",
        "closing brackets and parentheses, more strongly the deeper the nesting they close",
        _closing_bracket_depth,
        "context",
    ),
    # positional
    PlantedFeature(
        "first_token", "the first token of the text", _position(lambda i, n: 1.0 if i == 0 else 0.0), "position"
    ),
    PlantedFeature(
        "late_position",
        "every token, more strongly the later it comes in the text",
        _position(lambda i, n: (i + 1) / n),
        "position",
    ),
    PlantedFeature(
        "last_token", "the last token of the text", _position(lambda i, n: 1.0 if i == n - 1 else 0.0), "position"
    ),
    # multi-token concepts
    PlantedFeature("months", "names of months", _month_tokens, "concept"),
    PlantedFeature(
        "python_keywords",
        "Python keywords such as def, class, return and import",
        _each(lambda t: _word(t) in PYTHON_KEYWORDS),
        "concept",
    ),
    PlantedFeature(
        "number_words",
        "numbers written as words, like one, two or three",
        _each(lambda t: _word(t).lower() in NUMBER_WORDS),
        "concept",
    ),
    PlantedFeature(
        "builtin_types",
        "names of Python built-in types such as int, str, list and dict",
        _each(lambda t: _word(t) in BUILTIN_TYPES),
        "concept",
    ),
    # sparse vs dense
    PlantedFeature("however", 'the word "however" (rare)', _each(lambda t: _word(t).lower() == "however"), "sparse"),
    PlantedFeature(
        "letters_only", "every word made only of letters (dense)", _each(lambda t: _word(t).isalpha()), "dense"
    ),
    PlantedFeature("spaces", "tokens that begin with a space (dense)", _each(lambda t: t[:1] == " "), "dense"),
]


def _where(exc: BaseException, path: Path) -> str:
    """Returns `file:line` of the deepest frame of `exc` inside `path` (else its deepest frame)."""
    frames = traceback.extract_tb(exc.__traceback__)
    inside = [f for f in frames if Path(f.filename).resolve() == path.resolve()]
    chosen = inside or list(frames)
    return f"{chosen[-1].filename}:{chosen[-1].lineno}" if chosen else str(path)


def _guarded(feature: PlantedFeature, path: Path) -> PlantedFeature:
    """Returns `feature` whose activation function turns an exception into one FeatureError line
    naming the feature, the file and line, and the tokens it was given."""
    function = feature.activations

    def activations(tokens: Sequence[str]) -> list[float]:
        try:
            return function(tokens)
        except Exception as exc:
            shown = "".join(tokens)[:60]
            raise FeatureError(
                f"planted feature {feature.name!r} raised {type(exc).__name__}: {exc} at {_where(exc, path)} "
                f"on the text {shown!r}"
            ) from None

    return dataclasses.replace(feature, activations=activations)


def _import_planted_file(path: Path) -> object:
    """Runs the user's file as a module; raises ConfigError (file, line, exception) when it fails."""
    spec = importlib.util.spec_from_file_location(f"autointerp_user_planted_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import planted-feature file {path}")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise ConfigError(
            f"planted-feature file {exc.filename or path}:{exc.lineno}: {type(exc).__name__}: {exc.msg}"
        ) from None
    except Exception as exc:
        raise ConfigError(
            f"planted-feature file {path} failed to load at {_where(exc, path)}: {type(exc).__name__}: {exc}"
        ) from None
    return module


def load_planted_features(path: Path | None = None) -> list[PlantedFeature]:
    """Returns the builtin planted features, or those listed in `PLANTED_FEATURES` of a Python file
    (their functions wrapped so that an exception becomes one FeatureError line naming file and line)."""
    if path is None:
        return list(BUILTIN_PLANTED_FEATURES)
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(f"planted-feature file {path} is a folder; give the .py file that defines PLANTED_FEATURES")
    if not path.is_file():
        raise ConfigError(f"planted-feature file {path} does not exist")
    module = _import_planted_file(path)
    features = getattr(module, "PLANTED_FEATURES", None)
    if not isinstance(features, list) or not all(isinstance(f, PlantedFeature) for f in features):
        raise ConfigError(f"{path} must define PLANTED_FEATURES, a list of autointerp.subject.planted.PlantedFeature")
    names = [f.name for f in features]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path} defines a planted feature name twice")
    return [_guarded(f, path) for f in features]


SAMPLE_TOKENS: list[str] = ["The", " value", " of", " x", " is", " 42", ".", "\n", " (", "see", ' "', "May", '"', ")"]
"""A short window of decoded tokens on which `check_planted_features` tries each function."""


def check_planted_features(features: Sequence[PlantedFeature], tokens: Sequence[str] = SAMPLE_TOKENS) -> None:
    """Calls each feature on `tokens`; raises FeatureError when one raises, returns the wrong number of
    values, or returns a non-finite value. Returns None when all of them pass."""
    for feature in features:
        values = feature.activations(list(tokens))
        if len(values) != len(tokens):
            raise FeatureError(
                f"planted feature {feature.name!r} returned {len(values)} values for {len(tokens)} tokens"
            )
        for position, value in enumerate(values):
            if not math.isfinite(float(value)):
                raise FeatureError(
                    f"planted feature {feature.name!r} returned {value} for token {position} ({tokens[position]!r}) "
                    f"of {''.join(tokens)!r}; activations must be finite numbers"
                )
