"""Synthetic feature families and the examples built from them: pure logic, no model."""

from __future__ import annotations

from autointerp.simtrain.examples import build_examples, member_activations
from autointerp.simtrain.families import BENCHMARK_WORDS, frequent_words, synthetic_features
from autointerp.subject.planted import BUILTIN_PLANTED_FEATURES, SAMPLE_TOKENS

WINDOWS = [
    [" a", " file", " is", " opened", " with", " the", " path", "."],
    ["The", " value", " of", " x", " and", " y", " is", " 42", "."],
    ["def", " f", "(", "x", ")", ":", "\n", " return", " x", " +", " 1"],
    [" it", " can", " be", " raised", " by", " a", " function", " in", " the", " module"],
] * 10


def test_no_member_is_a_benchmark_feature() -> None:
    members = synthetic_features(WINDOWS, words=50)
    benchmark = {f.description.lower() for f in BUILTIN_PLANTED_FEATURES}
    assert len(members) > 60
    for member in members:
        assert len(member.descriptions) >= 2, member.name
        assert not benchmark & {d.lower() for d in member.descriptions}, member.name
        if member.family == "word":
            assert member.name.removeprefix("word:") not in BENCHMARK_WORDS


def test_frequent_words_leave_out_benchmark_and_set_words() -> None:
    words = frequent_words(WINDOWS, 20, min_windows=5)
    assert "the" not in words and "of" not in words and "is" not in words  # benchmark words
    assert "file" not in words and "and" not in words  # in word sets
    assert "opened" in words and "value" not in words  # "value" is in a word set


def test_held_out_split_is_stable_and_about_a_fifth() -> None:
    members = synthetic_features(WINDOWS, words=50)
    held = [m.name for m in members if m.held_out]
    assert held == [m.name for m in synthetic_features(WINDOWS, words=50) if m.held_out]
    assert 0.08 < len(held) / len(members) < 0.35


def test_every_member_returns_one_value_per_token() -> None:
    for member in synthetic_features(WINDOWS, words=50):
        values = member.activations(list(SAMPLE_TOKENS))
        assert len(values) == len(SAMPLE_TOKENS), member.name
        assert all(v >= 0 for v in values), member.name


def test_after_before_and_inside_members_fire_where_they_say() -> None:
    members = {m.name: m for m in synthetic_features(WINDOWS, words=50)}
    tokens = [" x", " and", " y", " and", " z"]
    assert members["after:and"].activations(tokens) == [0, 0, 1, 0, 1]
    assert members["before:and"].activations(tokens) == [1, 0, 1, 0, 0]
    assert members["inside:backticks"].activations([" see", " `", "foo", "`", " bar"]) == [0, 0, 1, 0, 0]


def test_examples_are_firing_quiet_and_cross() -> None:
    members = [m for m in synthetic_features(WINDOWS, words=50) if m.name in ("set:files", "set:conjunctions")]
    examples = build_examples(members, [WINDOWS], active_per_member=2, quiet_per_member=1, cross_per_member=1)
    assert len(examples) == 2 * (2 + 1 + 1)
    by_member = {m.name: m for m in members}
    for example in examples:
        member = by_member[example.source]
        assert example.description in member.descriptions
        # the levels are the described member's, normalised by its max over the window set
        acts = member_activations(member, WINDOWS)
        assert example.levels == acts.levels(WINDOWS.index(example.tokens))
    assert any(max(e.levels) == 0 for e in examples)  # quiet windows, and cross ones that do not fire
    assert build_examples(members, [WINDOWS], seed=1) == build_examples(members, [WINDOWS], seed=1)
    assert build_examples(members, [WINDOWS], seed=1) != build_examples(members, [WINDOWS], seed=2)
