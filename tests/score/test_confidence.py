"""Bootstrap intervals and the test against the distractor, on arrays whose answer is known."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import duckdb
import pytest

from autointerp.score.confidence import (
    CHANCE_P,
    Confidence,
    StoredConfidence,
    bootstrap_confidence,
    chance_note,
    like_chance,
    like_chance_sql,
    score_text,
    simulation_confidence,
    stored_confidence,
)


def _windows(n: int, seed: int) -> list[list[float]]:
    rng = random.Random(seed)
    return [[float(rng.choice([0, 0, 0, 10])) for _ in range(8)] for _ in range(n)]


def test_a_perfect_prediction_has_a_tight_interval_and_beats_a_random_distractor() -> None:
    true = _windows(12, 0)
    noise = _windows(12, 1)
    confidence = bootstrap_confidence(true, true, distractor=noise)
    assert confidence is not None
    assert confidence.low == pytest.approx(1.0) and confidence.high == pytest.approx(1.0)
    assert confidence.half_width == pytest.approx(0.0, abs=1e-9)
    assert confidence.p_vs_distractor == 0.0 and not like_chance(confidence.p_vs_distractor, 1.0)


def test_noise_against_noise_is_flagged_as_chance_with_a_wide_interval() -> None:
    true = _windows(12, 0)
    confidence = bootstrap_confidence(true, _windows(12, 2), distractor=_windows(12, 3))
    assert confidence is not None
    assert confidence.low < 0.0 < confidence.high or confidence.half_width > 0.1
    assert confidence.p_vs_distractor is not None and like_chance(confidence.p_vs_distractor)


def test_undefined_cases_give_no_interval() -> None:
    assert bootstrap_confidence([[0.0, 10.0]], [[0.0, 10.0]]) is None  # one window
    flat = [[0.0] * 4 for _ in range(6)]
    assert bootstrap_confidence(flat, flat) is None  # constant truth: undefined on every draw


def test_simulation_confidence_reads_the_stored_windows_and_skips_failed_calls() -> None:
    true = _windows(10, 4)
    details: dict[str, list[dict[str, Any]]] = {"windows": [{"kind": "top", "true": t, "predicted": t} for t in true]}
    details["windows"].append({"kind": "top", "true": [10.0] * 8, "predicted": None})  # a failed call
    other = {"windows": [{"kind": "top", "true": t, "predicted": [5.0] * 8} for t in true] + [details["windows"][-1]]}
    confidence = simulation_confidence(details, other)
    assert confidence is not None and confidence.low == pytest.approx(1.0) and confidence.p_vs_distractor == 0.0
    stored = confidence.as_details()
    assert stored["like_chance"] is False and stored["half_width"] == 0.0


# the chance rule shared by `autointerp show` and the review app -------------------------------------

P_VALUES = [None, 0.0, 0.01, CHANCE_P, 0.0501, 0.31, 1.0, math.nan, math.inf]
CHANCE = [False, False, False, False, True, True, True, False, False]
"""p at the threshold is not chance-level; missing or non-finite p never is."""


def test_the_rule_on_known_p_values() -> None:
    assert [like_chance(p) for p in P_VALUES] == CHANCE


SCORES = [None, 0.4, -0.06, 0.0, math.nan, -math.inf]
"""Beside a score at or below 0 every p is chance-level; a missing or non-finite score leaves p's verdict."""


def test_a_score_at_or_below_zero_is_chance_level_whatever_p() -> None:
    for score in SCORES:
        expected = CHANCE if score is None or not math.isfinite(score) or score > 0 else [True] * len(P_VALUES)
        assert [like_chance(p, score) for p in P_VALUES] == expected, score
    assert chance_note(0.0, -0.06) == (
        "a correlation of -0.06 predicts nothing: at or below 0, whatever its distractor scores"
    )
    assert chance_note(0.31, 0.2).endswith("(one-sided bootstrap test: p = 0.31)")


def test_the_sql_rule_agrees_with_the_python_rule() -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE t (n INTEGER, p DOUBLE, score DOUBLE)")
    cases = [(p, score) for score in SCORES for p in P_VALUES]
    con.executemany("INSERT INTO t VALUES (?, ?, ?)", [(n, p, s) for n, (p, s) in enumerate(cases)])
    rows = con.execute(f"SELECT {like_chance_sql('p', 'score')} FROM t ORDER BY n").fetchall()
    assert [r[0] for r in rows] == [like_chance(p, s) for p, s in cases]


def test_stored_confidence_reads_what_the_score_stage_writes() -> None:
    written = Confidence(low=0.5, high=0.66, half_width=0.08, p_vs_distractor=0.31, resamples=400).as_details()
    for details in ({"windows": [], "confidence": written}, json.dumps({"confidence": written})):
        stored = stored_confidence(details)
        assert stored == StoredConfidence(half_width=0.08, p_vs_distractor=0.31) and stored.like_chance
    beats = Confidence(low=0.5, high=0.66, half_width=0.08, p_vs_distractor=0.0, resamples=400).as_details(0.58)
    assert beats["like_chance"] is False
    assert stored_confidence({"confidence": beats}) == StoredConfidence(0.08, 0.0)
    assert not StoredConfidence(0.08, 0.0).like_chance
    assert stored_confidence({"confidence": beats}, 0.58) == StoredConfidence(0.08, 0.0, 0.58)
    below_zero = stored_confidence({"confidence": beats}, -0.06)
    assert below_zero is not None and below_zero.like_chance and below_zero.note.startswith("a correlation of -0.06")
    assert Confidence(-0.1, 0.0, 0.05, 0.0, 400).as_details(-0.06)["like_chance"] is True


@pytest.mark.parametrize(
    "details",
    [None, {}, {"windows": []}, "{}", "not json", [1], {"confidence": 5}, {"confidence": None}, 3.0],
)
def test_scores_without_a_confidence_have_none(details: object) -> None:
    assert stored_confidence(details) is None


def test_malformed_confidence_parts_are_unknown_never_chance() -> None:
    stored = stored_confidence({"confidence": {"half_width": "0.1", "p_vs_distractor": True, "like_chance": True}})
    assert stored == StoredConfidence(None, None) and not stored.like_chance  # the rule reads p, not the flag


def test_score_text_matches_the_cli_format() -> None:
    assert score_text(0.62, 0.08, 0.05) == "0.62 ± 0.08 (distractor 0.05)"
    assert score_text(0.62, None, 0.05) == "0.62 (distractor 0.05)"
    assert score_text(0.62) == "0.62"
    assert score_text(None, 0.08, 0.05) == "—"
    assert score_text(math.nan, 0.08) == "nan"
    assert score_text(0.62, math.nan, math.inf) == "0.62"


def _reference_interval(true: list[list[float]], predicted: list[list[float]]) -> tuple[float, float]:
    """The interval drawn the plain way: one pooled_correlation per resample of windows."""
    from autointerp.score.metrics import pooled_correlation

    rng, values = random.Random(0), []
    for _ in range(400):
        drawn = [rng.randrange(len(true)) for _ in range(len(true))]
        value = pooled_correlation([true[i] for i in drawn], [predicted[i] for i in drawn])
        if value is not None:
            values.append(value)
    values.sort()

    def at(q: float) -> float:
        index = q * (len(values) - 1)
        low, high = int(index), min(int(index) + 1, len(values) - 1)
        return values[low] + (values[high] - values[low]) * (index - low)

    return at(0.025), at(0.975)


def test_features_with_as_many_windows_share_the_draws_and_get_the_plain_draws_numbers() -> None:
    for n in (5, 6, 5):  # the second feature with 5 windows reads the draws the first one made
        true, predicted = _windows(n, n), [[v + 3.0 * (i % 2) for i, v in enumerate(w)] for w in _windows(n, n + 7)]
        confidence = bootstrap_confidence(true, predicted)
        assert confidence is not None
        low, high = _reference_interval(true, predicted)
        assert (confidence.low, confidence.high) == (pytest.approx(low, abs=1e-9), pytest.approx(high, abs=1e-9))
