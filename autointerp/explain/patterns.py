"""What the marked tokens of an explain prompt have in common: a line of counted facts (the tokens just
before and after them, where they sit in their excerpt, their shape, what encloses them) that the
explainer reads beside the excerpts.

A reader of the excerpts could count these; a small local explainer cannot, so the prompt states them.
Every fact is counted over the tokens marked in the excerpts shown (normalised level >= 1) and named
only when it holds for most of them; the count of marked and distinct tokens is always given.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from autointerp.activations import display_token

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


def _enclosed(tokens: Sequence[str], position: int, opening: str, closing: str) -> bool:
    """Returns True when the text before `position` leaves an `opening` character unclosed."""
    text = "".join(tokens[:position])
    if opening == closing:
        return text.count(opening) % 2 == 1
    depth = 0
    for char in text:
        depth += char in opening
        depth -= char in closing and depth > 0
    return depth > 0


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
    for offsets, end in ((from_start, "first"), (from_end, "last")):
        furthest = max(offsets)
        if furthest == 0:
            return f"all are the {end} token of their excerpt"
        if furthest < EDGE_TOKENS:
            return f"all are among the {end} {furthest + 1} tokens of their excerpt"
    first = from_start.count(0)
    last = from_end.count(0)
    if first >= POSITION_SHARE * count:
        return f"{_share(first, count)} are the first token of their excerpt"
    if last >= POSITION_SHARE * count:
        return f"{_share(last, count)} are the last token of their excerpt"
    return None


def _trend(exemplars: Sequence[dict[str, Any]]) -> str | None:
    """Returns how activation moves along the excerpts (relative position), when it moves clearly."""
    xs: list[float] = []
    ys: list[float] = []
    for exemplar in exemplars:
        n = len(exemplar["activations"])
        xs += [i / max(n - 1, 1) for i in range(n)]
        ys += [float(a) for a in exemplar["activations"]]
    if len(xs) < 3:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx <= 0 or syy <= 0:
        return None
    r = sxy / math.sqrt(sxx * syy)
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
    if position:
        facts.append(position)
    trend = _trend(exemplars)
    if trend:
        facts.append(trend)
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
