"""What the marked tokens of an explain prompt have in common: a line of counted facts (the tokens just
before and after them, where they sit in their excerpt, their shape, what encloses them) that the
explainer reads beside the excerpts.

A reader of the excerpts could count these; a small local explainer cannot, so the prompt states them.
Every fact is counted over the tokens marked in the excerpts shown (normalised level >= 1) and named
only when it holds for most of them; the count of marked and distinct tokens is always given.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from autointerp.activations import display_token
from autointerp.score.metrics import pooled_correlation

MOST = 0.75
"""Share of the marked tokens a shape or enclosure must hold for to be named."""
NEIGHBOUR_SHARE = 0.5
"""Share of the marked tokens one neighbouring token must take to be named."""
POSITION_SHARE = 0.6
"""Share of the marked tokens that sit first (or last) in their excerpt for the position to be named."""
EDGE_TOKENS = 3
"""Marked tokens all within this many tokens of an excerpt's start (or end) are named as being there."""
TREND = 0.5
"""Correlation of activation with position, over every token shown, that names a trend along the text."""

SHAPES: tuple[tuple[str, Callable[[str], bool]], ...] = (
    ("digits", lambda w: w.isdigit()),
    ("punctuation", lambda w: bool(w) and not any(c.isalnum() for c in w)),
    ("written in capitals", lambda w: len(w) >= 2 and w.isalpha() and w.isupper()),
    ("capitalised", lambda w: w[:1].isupper() and w.isalpha()),
    ("long words (9 or more letters)", lambda w: w.isalpha() and len(w) >= 9),
    ("words of one or two letters", lambda w: w.isalpha() and len(w) <= 2),
    ("words made only of letters", lambda w: w.isalpha()),
)
"""Shapes of a token's text (without its spaces), most specific first; the first that holds is named."""

ENCLOSURES: tuple[tuple[str, str, str], ...] = (
    ("parentheses or brackets", "([{", ")]}"),
    ("double quotes", '"', '"'),
    ("single quotes", "'", "'"),
    ("backticks", "`", "`"),
)


@dataclass(frozen=True)
class _Marked:
    tokens: Sequence[str]
    position: int

    @property
    def word(self) -> str:
        return self.tokens[self.position].strip()


def _is_open(text: str, opening: str, closing: str) -> bool:
    """Returns True when `text` leaves an `opening` character unclosed (for a quote, an odd count of it; an
    apostrophe between letters, as in "it's", is not a quote)."""
    if opening == closing:
        quotes = [
            i
            for i, char in enumerate(text)
            if char == opening and not (0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum())
        ]
        return len(quotes) % 2 == 1
    depth = 0
    for char in text:
        depth += char in opening
        depth -= char in closing and depth > 0
    return depth > 0


def _enclosed(tokens: Sequence[str], position: int, opening: str, closing: str) -> bool:
    """Returns True when the token at `position` sits inside an enclosure: open before it and still open
    after it (a marked closing quote or bracket is not inside what it closes)."""
    return _is_open("".join(tokens[:position]), opening, closing) and _is_open(
        "".join(tokens[: position + 1]), opening, closing
    )


def _quoted(text: str) -> str:
    return "'" + display_token(text) + "'"


def _ending(marked: list[_Marked]) -> str | None:
    """Returns the longest ending (2 to 6 letters) that most marked words share."""
    words = [m.word for m in marked if m.word.isalpha()]
    for size in range(6, 1, -1):
        endings = Counter(w[-size:].lower() for w in words if len(w) >= size)
        if endings:
            ending, count = endings.most_common(1)[0]
            if count >= MOST * len(marked):
                return f"{_share(count, len(marked))} end in {_quoted(ending)}"
    return None


def _share(count: int, total: int) -> str:
    return "all" if count == total else f"{count} of {total}"


def _neighbour(marked: list[_Marked], offset: int, label: str) -> str | None:
    words = Counter(
        m.tokens[m.position + offset].strip() or m.tokens[m.position + offset]
        for m in marked
        if 0 <= m.position + offset < len(m.tokens)
    )
    if not words:
        return None
    word, count = words.most_common(1)[0]
    if count < 2 or count < NEIGHBOUR_SHARE * len(marked):
        return None
    return f"{_share(count, len(marked))} come right {label} {_quoted(word)}"


def _position(marked: list[_Marked]) -> str | None:
    """Returns where the marked tokens sit when they cluster at the start or the end of their excerpts."""
    count = len(marked)
    from_start = [m.position for m in marked]
    from_end = [len(m.tokens) - 1 - m.position for m in marked]
    ends = ((from_start, "first"), (from_end, "last"))
    for offsets, end in ends:
        if max(offsets) == 0:
            return f"all are the {end} token of their excerpt"
    if all(len(m.tokens) > 2 * EDGE_TOKENS for m in marked):  # in shorter excerpts every token is near an end
        for offsets, end in ends:
            if max(offsets) < EDGE_TOKENS:
                return f"all are among the {end} {max(offsets) + 1} tokens of their excerpt"
    for offsets, end in ends:
        at_end = offsets.count(0)
        if at_end >= POSITION_SHARE * count:
            return f"{_share(at_end, count)} are the {end} token of their excerpt"
    return None


def _trend(levels: Sequence[Sequence[int]]) -> str | None:
    """Returns how the activation level (0-10, negatives at 0) moves along the excerpts, when it moves clearly."""
    if sum(len(row) for row in levels) < 3:
        return None
    places = [[i / max(len(row) - 1, 1) for i in range(len(row))] for row in levels]
    r = pooled_correlation(levels, places) or 0.0
    if r >= TREND:
        return "the activation grows the later the token comes in the excerpt"
    if r <= -TREND:
        return "the activation is strongest at the start of the excerpt and falls later"
    return None


def marked_patterns(exemplars: Sequence[dict[str, Any]], levels: Sequence[Sequence[int]]) -> str:
    """Returns one line of facts about the marked tokens (level >= 1) of the excerpts shown: how many are
    marked and distinct, and those of their neighbours, positions, shapes and enclosures that hold for most
    of them; "no token is marked" when none is."""
    marked = [
        _Marked(exemplar["tokens"], i)
        for exemplar, row in zip(exemplars, levels, strict=True)
        for i, level in enumerate(row)
        if level >= 1
    ]
    total_tokens = sum(len(row) for row in levels)
    if not marked:
        return "no token is marked"
    count = len(marked)
    distinct = len({m.word.lower() or m.tokens[m.position] for m in marked})
    facts = [f"{count} of the {total_tokens} tokens shown are marked, {distinct} distinct"]
    position = _position(marked)
    trend = None if position else _trend(levels)
    facts += [fact for fact in (position, trend) if fact]
    for offset, label in ((-1, "after"), (1, "before")):
        neighbour = _neighbour(marked, offset, label)
        if neighbour:
            facts.append(neighbour)
    if distinct >= 2:
        shapes = [(name, sum(test(m.word) for m in marked)) for name, test in SHAPES]
        facts += [f"{_share(n, count)} are {name}" for name, n in shapes if n >= MOST * count][:1]
        ending = _ending(marked)
        if ending:
            facts.append(ending)
    for name, opening, closing in ENCLOSURES:
        inside = sum(_enclosed(m.tokens, m.position, opening, closing) for m in marked)
        if inside >= MOST * count:
            facts.append(f"{_share(inside, count)} are inside {name}")
    return "; ".join(facts)
