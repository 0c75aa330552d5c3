"""The explanation that lists the strongest tokens of the windows the explainer saw."""

from __future__ import annotations

import json

from autointerp.explain.top_tokens import kept_top_tokens, quote_token, strongest_tokens, top_tokens_explanation


def window(tokens: list[str], acts: list[float]) -> dict:
    return {"tokens": tokens, "activations": acts}


WINDOWS = [
    window([" some", " of", " those", " are"], [10.0, 0.0, 5.0, 0.04]),  # " are": level 0, not firing
    window([" is", " some", "\n", " have"], [4.0, 2.0, 3.0, 4.0]),  # " some" again, weaker
]


def test_the_strongest_distinct_tokens_first_and_only_those_that_fire() -> None:
    assert strongest_tokens(WINDOWS, 10.0, 10) == ["some", "those", "is", "have", "\\n"]
    assert strongest_tokens(WINDOWS, 10.0, 2) == ["some", "those"]
    assert strongest_tokens([window(["a", "b"], [0.0, 0.01])], 10.0, 3) == []


def test_recurring_ranks_a_token_that_fires_wherever_it_appears_above_a_single_strong_one() -> None:
    """`" once"` is the strongest (10) but fires in one window and sits quiet in another; `" again"` fires at
    level 5 in all three windows; `" often"` fires at 5 in one window of its three, quiet in the others."""
    windows = [
        window([" once", " again", " often"], [10.0, 5.0, 5.0]),
        window([" once", " again", " often"], [0.0, 5.0, 0.0]),
        window([" x", " again", " often"], [0.0, 5.0, 0.0]),
    ]
    assert strongest_tokens(windows, 10.0, 3) == ["once", "again", "often"]
    # again: 3 windows x mean 5; once: 1 x mean 5; often: 1 x mean 5/3
    assert strongest_tokens(windows, 10.0, 3, rank="recurring") == ["again", "once", "often"]


def test_the_unread_leading_tokens_are_neither_named_nor_counted() -> None:
    windows = [window(["\n", " some", " cat"], [9.0, 1.0, 8.0]), window(["\n", " dog", " cat"], [9.0, 0.0, 8.0])]
    assert strongest_tokens(windows, 10.0, 3, unread=1) == ["cat", "some"]
    # " some" is read once and fires; " cat" twice, both firing: the newline is not read at all
    assert strongest_tokens(windows, 10.0, 3, rank="recurring", unread=1) == ["cat", "some"]
    assert top_tokens_explanation(windows, 10.0, limit=1, unread=3) is None


def test_the_list_reads_as_words_or_tokens() -> None:
    assert top_tokens_explanation(WINDOWS, 10.0, limit=3) == 'the words "some", "those" and "is"'
    assert top_tokens_explanation(WINDOWS[:1], 10.0, limit=1) == 'the word "some"'
    assert top_tokens_explanation(WINDOWS[1:], 4.0, limit=5) == 'the tokens "is", "have", "\\n" and "some"'
    assert top_tokens_explanation([window(["a"], [0.0])], 1.0) is None
    quote = [window([' "__', "__()"], [2.0, 1.0])]  # a token that holds a double quote is quoted with single ones
    assert top_tokens_explanation(quote, 2.0) == 'the tokens \'"__\' and "__()"'
    both = [window([""" '"'"""], [2.0])]  # both quotes: double ones, the inner escaped
    assert top_tokens_explanation(both, 2.0) == 'the token "\'\\"\'"'
    assert quote_token("\\\"'") == '"\\\\\\"\'"'  # backslash, quote, apostrophe: the backslash escaped too


def test_a_kept_list_is_told_from_the_explainers_answer_by_its_details() -> None:
    candidates = [{"text": "the word x", "source": "explainer"}, {"text": 'the word "y"', "source": "top tokens"}]
    assert kept_top_tokens({"best_of": {"chosen": 1, "candidates": candidates}})
    assert kept_top_tokens(json.dumps({"best_of": {"chosen": 1, "candidates": candidates}}))  # as DuckDB hands it back
    assert not kept_top_tokens({"best_of": {"chosen": 0, "candidates": candidates}})
    out_of_range = {"best_of": {"chosen": 5, "candidates": candidates}}
    malformed: list[object] = [None, "", "{not json", "[" * 100_000, out_of_range, {"best_of": []}]  # too deep, too
    assert not any(kept_top_tokens(details) for details in malformed)
