import pytest

from autointerp.experiments.proposals import ProposalParseError, input_experiment_verdict, parse_sentence
from autointerp.explain.explainer import ExplanationParseError, marked_text, parse_explanation, top_tokens_summary


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (" the word 'the' before nouns.", "the word 'the' before nouns"),
        (' "closing brackets"\nMore text', "closing brackets"),
        (" digits 0.5 and 3. Then more", "digits 0.5 and 3"),
        (' the word "is".', 'the word "is"'),
        (' "the token "of"', 'the token "of"'),
        (" `code spans`", "code spans"),
        # a list of quoted words keeps the quotes of its first and last word (they are not one pair)
        (' "Wednesday", "Thursday" and "Tuesday".', '"Wednesday", "Thursday" and "Tuesday"'),
        (" `x` and `y`", "`x` and `y`"),
        (" 'May' or 'June'", "'May' or 'June'"),
        (""" "'quoted'" """, "quoted"),
    ],
)
def test_parse_explanation_takes_the_first_sentence(answer: str, expected: str) -> None:
    assert parse_explanation(answer) == expected


@pytest.mark.parametrize("answer", ["", "   ", "...", " 123 456", "x" * 300])
def test_parse_explanation_rejects_unusable_answers(answer: str) -> None:
    with pytest.raises(ExplanationParseError):
        parse_explanation(answer)


def test_marked_text_wraps_firing_tokens_and_shows_newlines() -> None:
    assert marked_text(["The", " cat", "\n"], [0, 7, 0]) == "The<< cat>>\\n"


def test_top_tokens_summary_lists_each_token_once_by_strength() -> None:
    exemplars = [
        {"tokens": ["a", " cat", " cat"], "activations": [0.0, 1.0, 0.5]},
        {"tokens": [" dog"], "activations": [0.3]},
    ]
    assert top_tokens_summary(exemplars, 1.0) == "'cat' (10), 'dog' (3)"


def test_parse_sentence_stops_at_the_closing_quote() -> None:
    assert parse_sentence('The sky is blue." And more') == "The sky is blue."
    with pytest.raises(ProposalParseError):
        parse_sentence('"')


@pytest.mark.parametrize(
    ("on", "off", "verdict"),
    [
        ([8.0, 6.0], [0.0, 1.0], "supports"),
        ([0.2, 0.1], [0.0, 0.0], "refutes"),
        ([1.5, 1.5], [3.0, 3.0], "refutes"),
        ([1.5, 1.5], [0.0, 0.0], "inconclusive"),
        ([10.0], [10.0], "inconclusive"),  # both fire: the 'should not' text may hold the concept
        ([3.0, 3.0], [4.0, 5.0], "inconclusive"),
    ],
)
def test_input_experiment_verdict_rule(on: list[float], off: list[float], verdict: str) -> None:
    assert input_experiment_verdict(on, off) == verdict


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ('the token "where" (10).', 'the token "where"'),
        ("words like 'if' (9), 'else' (7)", "words like 'if', 'else'"),
        ('the tag is "the" (10', 'the tag is "the"'),  # cut off by the token limit
    ],
)
def test_the_prompts_activation_levels_are_not_echoed_into_explanations(answer: str, expected: str) -> None:
    assert parse_explanation(answer) == expected
