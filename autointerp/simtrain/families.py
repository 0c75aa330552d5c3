"""Synthetic feature families for training a simulator: functions of the tokens with several phrasings.

Each family member is a `SyntheticFeature`: an activation function over a window's decoded tokens
(as planted features are) and two or more natural-language descriptions of it. The families cover
single words, word sets, token classes, contexts ("after X", "inside quotes"), positions and graded
features, sparse and dense. None of them is one of the planted benchmark's features: the benchmark's
words, word sets and descriptions are left out, so the benchmark measures generalisation.
"""

from __future__ import annotations

import itertools
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from autointerp.subject.planted import (
    BUILTIN_PLANTED_FEATURES,
    BUILTIN_TYPES,
    MONTHS,
    NUMBER_WORDS,
    PYTHON_KEYWORDS,
    ActivationFunction,
    PlantedFeature,
)

HELD_OUT_SHARE = 0.2
"""Share of family members held out of training (chosen by a hash of the member's name)."""

BENCHMARK_WORDS = (
    {"the", "of", "is", "attribute", "however", "error"} | MONTHS | PYTHON_KEYWORDS | NUMBER_WORDS | BUILTIN_TYPES
)
"""Words the planted benchmark's features are about: no single-word member is made of them."""


@dataclass(frozen=True)
class SyntheticFeature:
    """One family member: an activation function and its phrasings (the first is the canonical one)."""

    name: str
    family: str
    descriptions: tuple[str, ...]
    activations: ActivationFunction

    @property
    def held_out(self) -> bool:
        """True when this member is never trained on (a stable hash of its name)."""
        return zlib.crc32(self.name.encode()) % 1000 < HELD_OUT_SHARE * 1000

    def as_planted(self) -> PlantedFeature:
        """Returns the member as a planted feature with its canonical description (for the benchmark)."""
        return PlantedFeature(self.name, self.descriptions[0], self.activations, self.family)


def _word(token: str) -> str:
    return token.strip()


def _each(predicate: Callable[[str], bool]) -> ActivationFunction:
    return lambda tokens: [1.0 if predicate(t) else 0.0 for t in tokens]


def _is_word(word: str) -> Callable[[str], bool]:
    return lambda token: _word(token).lower() == word


def _in_set(words: set[str]) -> Callable[[str], bool]:
    return lambda token: _word(token).lower() in words


def _after(previous: Callable[[str], bool]) -> ActivationFunction:
    return lambda tokens: [0.0] + [1.0 if previous(a) and _word(b) else 0.0 for a, b in itertools.pairwise(tokens)]


def _before(following: Callable[[str], bool]) -> ActivationFunction:
    return lambda tokens: [1.0 if following(b) and _word(a) else 0.0 for a, b in itertools.pairwise(tokens)] + [0.0]


def _between(opening: str, closing: str) -> ActivationFunction:
    """Fires on tokens with a letter or digit between `opening` and `closing` characters."""

    def activations(tokens: Sequence[str]) -> list[float]:
        out, inside = [], False
        for token in tokens:
            fired = False
            for ch in token:
                if ch == opening and not inside:
                    inside = True
                elif ch == closing and inside:
                    inside = False
                elif inside and ch.isalnum():
                    fired = True
            out.append(1.0 if fired else 0.0)
        return out

    return activations


def _position(value: Callable[[int, int], float]) -> ActivationFunction:
    return lambda tokens: [value(i, len(tokens)) for i in range(len(tokens))]


def word_members(words: Sequence[str]) -> list[SyntheticFeature]:
    """Returns one member per word: fires on that word (any case), four phrasings."""
    return [
        SyntheticFeature(
            f"word:{w}",
            "word",
            (f'the word "{w}"', f'the token "{w}"', f'occurrences of the word "{w}"', f'"{w}"'),
            _each(_is_word(w)),
        )
        for w in words
    ]


WORD_SETS: dict[str, tuple[set[str], tuple[str, ...]]] = {
    "pronouns": (
        {"it", "they", "we", "you", "he", "she", "its", "their", "them"},
        ("pronouns such as it, they and we", "personal pronouns"),
    ),
    "articles": ({"a", "an"}, ("the indefinite articles a and an", 'the words "a" and "an"')),
    "conjunctions": ({"and", "or", "but", "nor"}, ("conjunctions like and, or and but", 'the words "and" and "or"')),
    "prepositions": (
        {"in", "on", "at", "to", "from", "with", "by", "into", "onto"},
        ("prepositions such as in, on and with", "short prepositions"),
    ),
    "modals": (
        {"can", "could", "might", "must", "should", "will", "would", "shall"},
        ("modal verbs like can, must and should", "words of obligation or possibility such as must and can"),
    ),
    "constants": ({"true", "false", "none"}, ("the constants True, False and None", "boolean values and None")),
    "comparison": (
        {"less", "greater", "more", "fewer", "equal", "smaller", "larger", "than"},
        ("comparison words such as less, greater and equal", "words that compare sizes"),
    ),
    "negation": (
        {"not", "no", "never", "nothing", "cannot"},
        ("negation words like not, no and never", "words that negate"),
    ),
    "quantifiers": (
        {"all", "any", "each", "every", "some", "many", "few", "both"},
        ("quantifiers such as all, any and each", "words for how many, like every and some"),
    ),
    "files": (
        {"file", "files", "path", "paths", "directory", "filename", "filenames"},
        ("words about files and paths", "file, path and directory"),
    ),
    "questions": (
        {"what", "when", "where", "which", "who", "why", "how"},
        ("question words like what, where and how", "wh-words such as which and when"),
    ),
    "ordinals": (
        {"first", "second", "third", "last", "next", "previous", "final"},
        ("ordinal words such as first, second and last", "words giving an order, like next and previous"),
    ),
    "be_verbs": ({"be", "are", "was", "were", "been", "being"}, ("forms of the verb to be", "be, are, was and were")),
    "callables": (
        {"function", "functions", "method", "methods", "callable"},
        ("the words function and method", "words for callables such as function"),
    ),
    "exceptions": (
        {"exception", "exceptions", "raised", "raises", "raise"},
        ("words about raising exceptions", "exception and raised"),
    ),
    "objects": (
        {"object", "objects", "instance", "instances", "type"},
        ("the words object and instance", "words for objects and their types"),
    ),
    "sizes": ({"size", "length", "count", "number", "len"}, ("words for sizes and lengths", "size, length and count")),
    "arguments": (
        {"argument", "arguments", "parameter", "parameters", "args"},
        ("the words argument and parameter", "words for function arguments"),
    ),
    "values": ({"value", "values"}, ('the word "value"', "value and values")),
    "modules": (
        {"module", "modules", "package", "packages", "import"},
        ("words about modules and packages", "module and package"),
    ),
}


def word_set_members() -> list[SyntheticFeature]:
    """Returns one member per word set: fires on any of its words (any case)."""
    return [
        SyntheticFeature(f"set:{name}", "word-set", phrasings, _each(_in_set(words)))
        for name, (words, phrasings) in WORD_SETS.items()
    ]


def _letters(token: str) -> str:
    return _word(token) if _word(token).isalpha() else ""


CLASSES: dict[str, tuple[Callable[[str], bool], tuple[str, ...]]] = {
    "all_caps": (
        lambda t: _word(t).isalpha() and len(_word(t)) >= 2 and _word(t).isupper(),
        ("words written in all capital letters", "uppercase words such as NULL or API"),
    ),
    "ing": (lambda t: _letters(t).endswith("ing") and len(_letters(t)) > 4, ("words ending in -ing", "gerunds")),
    "ed": (lambda t: _letters(t).endswith("ed") and len(_letters(t)) > 3, ("words ending in -ed", "past tense verbs")),
    "ly": (
        lambda t: _letters(t).endswith("ly") and len(_letters(t)) > 3,
        ("adverbs ending in -ly", "words ending in ly"),
    ),
    "plural": (
        lambda t: _letters(t).islower() and _letters(t).endswith("s") and len(_letters(t)) >= 4,
        ("plural nouns ending in s", "lowercase words ending with the letter s"),
    ),
    "short_words": (
        lambda t: t[:1] == " " and _word(t).isalpha() and len(_word(t)) <= 2,
        ("very short words of one or two letters", "two-letter words"),
    ),
    "open_brackets": (
        lambda t: any(c in "([{" for c in t),
        ("opening brackets and parentheses", "the characters (, [ and {"),
    ),
    "operators": (
        lambda t: _word(t) in {"=", "+", "-", "*", "/", "==", "!=", "<", ">", "<=", ">=", "+=", "**", "%"},
        ("operators such as =, + and *", "arithmetic and comparison operators"),
    ),
    "colons": (lambda t: ":" in t, ("colons", "the colon character")),
    "dashes": (lambda t: _word(t) in {"-", "--", "—", "–"}, ("hyphens and dashes", "dash characters")),
    "quotes": (lambda t: any(c in "\"'`“”" for c in t), ("quotation marks", "quote characters and backticks")),
    "underscore_start": (
        lambda t: _word(t).startswith("_") and not _word(t).startswith("__"),
        ("names that start with a single underscore", "private names beginning with _"),
    ),
    "asterisks": (lambda t: "*" in t, ("asterisks", "the * character")),
    "multi_digit": (
        lambda t: _word(t).isdigit() and len(_word(t)) >= 2,
        ("numbers with two or more digits", "multi-digit numbers"),
    ),
    "digit_zero": (lambda t: _word(t) == "0", ("the digit 0", "zero written as a digit")),
    "digit_one": (lambda t: _word(t) == "1", ("the digit 1", "the number 1")),
    "dots": (lambda t: _word(t) == ".", ("periods", "full stops")),
    "commas": (lambda t: _word(t) == ",", ("commas", "the comma character")),
    "single_letters": (
        lambda t: len(_word(t)) == 1 and _word(t).isalpha(),
        ("single letters", "one-letter names such as x or i"),
    ),
    "camel_case": (
        lambda t: _word(t)[:1].isupper() and any(c.isupper() for c in _word(t)[1:]) and _word(t).isalpha(),
        ("CamelCase names", "words with a capital letter inside them"),
    ),
    "equals": (lambda t: _word(t) == "=", ("the equals sign", "assignments with =")),
    "at_sign": (lambda t: "@" in t, ("the @ sign", "decorators starting with @")),
}


def class_members() -> list[SyntheticFeature]:
    """Returns one member per token class."""
    return [
        SyntheticFeature(f"class:{name}", "class", phrasings, _each(rule))
        for name, (rule, phrasings) in CLASSES.items()
    ]


CONTEXT_WORDS = ("a", "to", "and", "in", "an", "be", "for", "this", "by", "with", "are", "that")
"""Words whose neighbours give "after X" / "before X" members (the benchmark has "of", "the" and ".")."""


def context_members() -> list[SyntheticFeature]:
    """Returns members that depend on neighbours or enclosing characters."""
    members = []
    for w in CONTEXT_WORDS:
        is_w = _is_word(w)
        members.append(
            SyntheticFeature(
                f"after:{w}", "after", (f'the word right after "{w}"', f'words that follow "{w}"'), _after(is_w)
            )
        )
        members.append(
            SyntheticFeature(
                f"before:{w}", "before", (f'the word right before "{w}"', f'words just before "{w}"'), _before(is_w)
            )
        )
    members += [
        SyntheticFeature(
            "after:comma", "after", ("the word after a comma", "words that follow a comma"), _after(lambda t: "," in t)
        ),
        SyntheticFeature(
            "after:colon", "after", ("the token after a colon", "what follows a colon"), _after(lambda t: ":" in t)
        ),
        SyntheticFeature(
            "after:newline",
            "after",
            ("the first token of each line", "tokens right after a line break"),
            _after(lambda t: "\n" in t),
        ),
        SyntheticFeature(
            "after:number",
            "after",
            ("the token after a number", "words following digits"),
            _after(lambda t: _word(t).isdigit()),
        ),
        SyntheticFeature(
            "inside:single_quotes",
            "inside",
            ("text inside single quotes", "words between apostrophes"),
            _between("'", "'"),
        ),
        SyntheticFeature(
            "inside:square_brackets",
            "inside",
            ("text inside square brackets", "what is written between [ and ]"),
            _between("[", "]"),
        ),
        SyntheticFeature(
            "inside:curly_braces",
            "inside",
            ("text inside curly braces", "what is written between { and }"),
            _between("{", "}"),
        ),
        SyntheticFeature(
            "inside:backticks", "inside", ("text inside backticks", "code between ` marks"), _between("`", "`")
        ),
    ]
    return members


def position_members() -> list[SyntheticFeature]:
    """Returns members that depend on the token's position in the text."""
    return [
        SyntheticFeature(
            "position:first_three",
            "position",
            ("the first three tokens of the text", "the beginning of the text"),
            _position(lambda i, n: 1.0 if i < 3 else 0.0),
        ),
        SyntheticFeature(
            "position:first_two",
            "position",
            ("the first two tokens of the text", "the opening pair of tokens"),
            _position(lambda i, n: 1.0 if i < 2 else 0.0),
        ),
        SyntheticFeature(
            "position:last_two",
            "position",
            ("the last two tokens of the text", "the closing pair of tokens"),
            _position(lambda i, n: 1.0 if i >= n - 2 else 0.0),
        ),
        SyntheticFeature(
            "position:late_rise",
            "position",
            ("the second half of the text, rising towards its end", "late tokens, strongest at the end"),
            _position(lambda i, n: max(0.0, (2 * i - n) / n)),
        ),
        SyntheticFeature(
            "position:second",
            "position",
            ("the second token of the text", "only the token at position two"),
            _position(lambda i, n: 1.0 if i == 1 else 0.0),
        ),
        SyntheticFeature(
            "position:second_half",
            "position",
            ("every token in the second half of the text", "the later half of the text"),
            _position(lambda i, n: 1.0 if i >= n / 2 else 0.0),
        ),
        SyntheticFeature(
            "position:early",
            "position",
            ("every token, more strongly the earlier it comes in the text", "early tokens, strongest at the start"),
            _position(lambda i, n: (n - i) / n),
        ),
        SyntheticFeature(
            "position:last_three",
            "position",
            ("the last three tokens of the text", "the end of the text"),
            _position(lambda i, n: 1.0 if i >= n - 3 else 0.0),
        ),
    ]


def _word_length(token: str) -> float:
    word = _word(token)
    return float(len(word)) if word.isalpha() and len(word) >= 4 else 0.0


def _number_size(token: str) -> float:
    word = _word(token)
    return float(min(len(word), 6)) if word.isdigit() else 0.0


def graded_members() -> list[SyntheticFeature]:
    """Returns members whose activation grows with a property of the token."""
    return [
        SyntheticFeature(
            "graded:word_length",
            "graded",
            ("words, more strongly the longer they are", "long words, strongest for the longest"),
            lambda tokens: [_word_length(t) for t in tokens],
        ),
        SyntheticFeature(
            "graded:number_size",
            "graded",
            ("numbers, more strongly the more digits they have", "digits, strongest for long numbers"),
            lambda tokens: [_number_size(t) for t in tokens],
        ),
        SyntheticFeature(
            "dense:every",
            "dense",
            ("every token of the text", "all tokens equally"),
            _position(lambda i, n: 1.0),
        ),
        SyntheticFeature(
            "dense:lowercase",
            "dense",
            ("every lowercase word (dense)", "words in small letters"),
            _each(lambda t: _word(t).isalpha() and _word(t).islower()),
        ),
    ]


def frequent_words(windows: Sequence[Sequence[str]], count: int, min_windows: int = 8) -> list[str]:
    """Returns the `count` most frequent lowercase words of at least two letters in `windows` that appear
    in at least `min_windows` windows, leaving out the benchmark's words and the word sets' words."""
    in_sets = set().union(*(words for words, _ in WORD_SETS.values()))
    seen: Counter[str] = Counter()
    for tokens in windows:
        seen.update({_word(t).lower() for t in tokens if _word(t).isalpha() and len(_word(t)) >= 2})
    banned = BENCHMARK_WORDS | in_sets
    return [w for w, n in seen.most_common() if n >= min_windows and w not in banned][:count]


def synthetic_features(windows: Sequence[Sequence[str]], words: int = 120) -> list[SyntheticFeature]:
    """Returns every family's members on a corpus (single words are chosen from its frequent words),
    none equal to a planted benchmark feature's description."""
    members = (
        word_members(frequent_words(windows, words))
        + word_set_members()
        + class_members()
        + context_members()
        + position_members()
        + graded_members()
    )
    benchmark = {f.description.lower() for f in BUILTIN_PLANTED_FEATURES}
    return [m for m in members if not benchmark & {d.lower() for d in m.descriptions}]
