"""Bootstrap intervals and the test against the distractor, on arrays whose answer is known."""

from __future__ import annotations

import random

import pytest

from autointerp.score.confidence import bootstrap_confidence, simulation_confidence


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
    assert confidence.p_vs_distractor == 0.0 and not confidence.like_chance


def test_noise_against_noise_is_flagged_as_chance_with_a_wide_interval() -> None:
    true = _windows(12, 0)
    confidence = bootstrap_confidence(true, _windows(12, 2), distractor=_windows(12, 3))
    assert confidence is not None
    assert confidence.low < 0.0 < confidence.high or confidence.half_width > 0.1
    assert confidence.p_vs_distractor is not None and confidence.like_chance


def test_undefined_cases_give_no_interval() -> None:
    assert bootstrap_confidence([[0.0, 10.0]], [[0.0, 10.0]]) is None  # one window
    flat = [[0.0] * 4 for _ in range(6)]
    assert bootstrap_confidence(flat, flat) is None  # constant truth: undefined on every draw


def test_simulation_confidence_reads_the_stored_windows_and_skips_failed_calls() -> None:
    true = _windows(10, 4)
    details = {"windows": [{"kind": "top", "true": t, "predicted": t} for t in true]}
    details["windows"].append({"kind": "top", "true": [10.0] * 8, "predicted": None})  # a failed call
    other = {"windows": [{"kind": "top", "true": t, "predicted": [5.0] * 8} for t in true] + [details["windows"][-1]]}
    confidence = simulation_confidence(details, other)
    assert confidence is not None and confidence.low == pytest.approx(1.0) and confidence.p_vs_distractor == 0.0
    stored = confidence.as_details()
    assert stored["like_chance"] is False and stored["half_width"] == 0.0
