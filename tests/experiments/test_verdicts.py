import pytest

from autointerp.experiments.proposals import (
    MIN_EFFECT_KL,
    ProposalParseError,
    minimal_pair_verdict,
    output_verdict,
    parse_replacement_word,
    parse_word_list,
    replacement_parser,
    words_match,
)


def test_parse_word_list() -> None:
    assert parse_word_list(" Paris, London; 'Rome'.\nmore, words") == ["paris", "london", "rome", "more", "words"]
    with pytest.raises(ProposalParseError):
        parse_word_list(" , ; 123")


def test_a_replacement_must_differ_from_the_token() -> None:
    parse = replacement_parser(" The")
    assert parse('cat" because') == "cat"
    with pytest.raises(ProposalParseError, match="the token itself"):
        parse('the" is my answer')


def test_parse_replacement_word() -> None:
    assert parse_replacement_word('dog" is my answer') == "dog"
    with pytest.raises(ProposalParseError):
        parse_replacement_word('"')


def test_words_match_ignores_case_space_and_accepts_long_prefixes() -> None:
    assert words_match(["paris", "rome"], [" Paris", " Lon"]) == ["paris"]
    assert words_match(["understanding"], [" under"]) == ["understanding"]
    assert words_match(["an"], [" a"]) == []


@pytest.mark.parametrize(
    ("kl", "predicted", "changed", "verdict"),
    [
        (MIN_EFFECT_KL / 2, ["paris"], [" Paris"], "inconclusive"),
        (0.5, ["paris"], [" Paris", " Rome"], "supports"),
        (0.5, ["tokyo"], [" Paris", " Rome"], "refutes"),
        (0.5, [], [" Paris"], "refutes"),
    ],
)
def test_output_verdict(kl: float, predicted: list[str], changed: list[str], verdict: str) -> None:
    assert output_verdict(kl, predicted, changed) == verdict


@pytest.mark.parametrize(
    ("original", "edited", "verdict"),
    [
        (4.0, 1.0, "supports"),
        (4.0, -3.0, "supports"),
        (4.0, 3.5, "refutes"),
        (4.0, 2.6, "inconclusive"),
        (0.0, 1.0, "inconclusive"),
    ],
)
def test_minimal_pair_verdict(original: float, edited: float, verdict: str) -> None:
    assert minimal_pair_verdict(original, edited) == verdict
