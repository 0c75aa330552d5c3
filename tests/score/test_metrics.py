import random
import warnings

import pytest

from autointerp.activations import normalize_activations
from autointerp.score.metrics import pearson_correlation, pooled_correlation


def test_perfect_prediction_scores_one() -> None:
    true = [0, 0, 3, 10, 0, 5]
    assert pearson_correlation(true, true) == pytest.approx(1.0)
    assert pearson_correlation(true, [2 * v + 1 for v in true]) == pytest.approx(1.0)


def test_shuffled_prediction_scores_about_zero() -> None:
    rng = random.Random(0)
    true = [rng.random() for _ in range(5000)]
    shuffled = true[:]
    rng.shuffle(shuffled)
    value = pearson_correlation(true, shuffled)
    assert value is not None and abs(value) < 0.05


def test_constant_prediction_is_zero_without_dividing_by_zero() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pearson_correlation([0, 1, 5], [3, 3, 3]) == 0.0


def test_constant_truth_is_undefined_not_zero() -> None:
    assert pearson_correlation([0, 0, 0], [1, 2, 3]) is None


def test_pooled_correlation_pools_tokens_rather_than_averaging_windows() -> None:
    true = [[0, 10], [0, 0]]
    predicted = [[0, 9], [0, 1]]
    # per-window averaging is undefined for the flat second window; pooling is not
    assert pooled_correlation(true, predicted) == pytest.approx(pearson_correlation([0, 10, 0, 0], [0, 9, 0, 1]))


def test_mismatched_lengths_raise() -> None:
    with pytest.raises(ValueError, match="lengths differ"):
        pearson_correlation([1, 2], [1])


def test_normalize_activations_follows_bills_et_al() -> None:
    assert normalize_activations([-1.0, 0.0, 0.05, 0.5, 1.0, 2.0], 1.0) == [0, 0, 0, 5, 10, 10]
    assert normalize_activations([1.0, 2.0], 0.0) == [0, 0]


def test_balanced_accuracy_weights_both_classes() -> None:
    from autointerp.score.metrics import balanced_accuracy

    labels = [True, False, False, False]
    assert balanced_accuracy(labels, [True, False, False, False]) == 1.0
    assert balanced_accuracy(labels, [False, False, False, False]) == 0.5  # always "no" is chance
    assert balanced_accuracy(labels, [True, True, True, True]) == 0.5
    assert balanced_accuracy([True, True], [True, False]) is None  # one class empty: undefined
