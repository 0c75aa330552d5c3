"""What the marked tokens have in common: each fact is counted over the marked tokens and named only
when it holds for most of them."""

from __future__ import annotations

from typing import Any

from autointerp.activations import normalize_activations
from autointerp.explain.explainer import build_explainer_prompt, explain_template
from autointerp.explain.patterns import marked_patterns


def _windows(*marked: tuple[list[str], list[int]]) -> list[dict[str, Any]]:
    return [
        {"tokens": tokens, "activations": [1.0 if i in firing else 0.0 for i in range(len(tokens))]}
        for tokens, firing in marked
    ]


def _patterns(exemplars: list[dict[str, Any]]) -> str:
    return marked_patterns(exemplars, [normalize_activations(e["activations"], 1.0) for e in exemplars])


def test_the_word_before_the_marked_tokens_is_named_when_it_comes_before_most_of_them() -> None:
    exemplars = _windows(
        ([" one", " of", " cats", " here"], [2]),
        ([" all", " of", " dogs", "."], [2]),
        ([" top", " of", " trees", " now"], [2]),
    )
    facts = _patterns(exemplars)
    assert facts.startswith("3 of the 12 tokens shown are marked, 3 distinct")
    assert "all come right after 'of'" in facts and "come right before" not in facts
    assert "are words made only of letters" in facts and "first token" not in facts


def test_positions_shapes_and_enclosures() -> None:
    first = _windows(([" Alpha", " b", " c"], [0]), ([" Beta", " d", " e"], [0]), ([" Gamma", " f", " g"], [0]))
    assert "all are the first token of their excerpt" in _patterns(first)
    near_end = _windows(
        ([" a", " b", " c", " d", " e", " f", " g"], [5, 6]), ([" h", " i", " j", " k", " l", " m", " n"], [5])
    )
    assert "all are among the last 2 tokens of their excerpt" in _patterns(near_end)
    short = _windows(([" a", " b", " c", " d", " e"], [3]), ([" f", " g", " h", " i", " j"], [2]))
    assert "tokens of their excerpt" not in _patterns(short)  # every token of a short excerpt is near an end
    assert "all are capitalised" in _patterns(first)
    digits = _windows(([" x", " 12", " y", "4"], [1, 3]), ([" 7", " z"], [0]))
    assert "all are digits" in _patterns(digits)
    quoted = _windows(([' "', "abc", '"', " x"], [1]), ([" say", ' "', "hi", '"'], [2]))
    assert "all are inside double quotes" in _patterns(quoted)
    bracketed = _windows(([" f", "(", "a", ")", " b"], [2]), ([" [", "[", "k", "]", "]"], [2]))
    assert "all are inside parentheses or brackets" in _patterns(bracketed)


def test_a_single_word_names_no_shape_and_a_rising_activation_is_named() -> None:
    same = _windows(([" x", " y", " is", " a", " b", " c"], [2]), ([" b", " c", " d", " is", " e", " f"], [3]))
    assert _patterns(same) == "2 of the 12 tokens shown are marked, 1 distinct"
    rising = [{"tokens": [" a", " b", " c", " d"], "activations": [0.1, 0.4, 0.7, 1.0]}] * 2
    assert "the activation grows the later the token comes in the excerpt" in _patterns(rising)


def test_the_explain_prompt_shows_the_facts() -> None:
    exemplars = _windows(([" a", " KeyError", " b"], [1]), ([" c", " ValueError"], [1]))
    user = build_explainer_prompt(exemplars, 1.0, explain_template(None))[0][1].content
    assert "What the marked tokens have in common: 2 of the 5 tokens shown are marked, 2 distinct" in user
    assert "all end in 'error'" in user


def test_an_apostrophe_or_a_marked_closing_quote_is_not_inside_quotes() -> None:
    apostrophes = _windows(([" it", "'s", " the", " cat"], [3]), ([" don", "'t", " go", " dog"], [3]))
    assert "inside single quotes" not in _patterns(apostrophes)
    closing = _windows(([' "', "abc", '"', " x", " y", " z", " w"], [2]), ([" q", ' "', "hi", '"', " k"], [3]))
    assert "inside double quotes" not in _patterns(closing)


def test_a_fact_below_its_share_is_not_named_and_nothing_marked_says_so() -> None:
    two_of_three = _windows(
        ([" f", "(", "a", ")", " b", " c", " d", " e"], [2]),
        ([" g", "(", "k", ")", " h", " i", " j", " l"], [2]),
        ([" m", " n", " o", " p", " q", " r", " s", " t"], [3]),
    )
    assert "inside parentheses" not in _patterns(two_of_three)
    assert _patterns(_windows(([" a", " b"], []))) == "no token is marked"
    assert marked_patterns([], []) == "no token is marked"
