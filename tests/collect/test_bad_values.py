"""Bad feature values: NaN / inf is an error naming the feature and window; negative values are kept."""

import pytest
import torch

from autointerp.collect.results import NonFiniteActivationError, SamplingPlan
from autointerp.collect.sampler import ExemplarSampler
from autointerp.collect.stream import StreamOptions, collect_exemplars
from autointerp.corpus.sources import Window

TOKENS = 5


def _windows(n: int) -> list[Window]:
    return [Window(doc_id=i // 2, offset=(i % 2) * TOKENS, token_ids=[i] * TOKENS) for i in range(n)]


def _collect(acts: torch.Tensor, names: list[str] | None = None) -> object:
    options = StreamOptions(list(range(acts.shape[2])), TOKENS, batch_size=4, feature_names=names)
    return collect_exemplars(_windows(acts.shape[0]), lambda ids: acts[ids[:, 0]], SamplingPlan(2, 2, 2, 1), options)


def test_nan_activation_names_the_feature_and_the_first_window() -> None:
    acts = torch.rand(20, TOKENS, 3)
    acts[9, 3, 1] = float("nan")  # window 9 (document 4, offset 5), token 3
    acts[13, 0, 1] = float("nan")
    with pytest.raises(NonFiniteActivationError) as caught:
        _collect(acts, ["f/a", "f/b", "f/c"])
    message = str(caught.value)
    assert "feature f/b has a non-finite activation (nan) at token 3 of window 4:5" in message
    assert "\n" not in message


@pytest.mark.parametrize("value", [float("inf"), float("-inf")])
def test_infinite_activation_is_an_error_too(value: float) -> None:
    acts = torch.rand(8, TOKENS, 2)
    acts[5, 1, 0] = value
    with pytest.raises(NonFiniteActivationError, match=r"feature #0 has a non-finite activation \(-?inf\)"):
        _collect(acts)


def test_the_tensor_merge_checks_as_well() -> None:
    sampler = ExemplarSampler(2, TOKENS, SamplingPlan(2, 2, 2, 1), torch.device("cpu"))
    sampler.compiled = False  # the merge used on GPUs
    sampler.feature_names = ["x", "y"]
    acts = torch.rand(4, TOKENS, 2)
    acts[2, 4, 1] = float("nan")
    with pytest.raises(NonFiniteActivationError, match=r"feature y .* at token 4 of window 1:0"):
        sampler.update(acts, _windows(4))


def test_negative_values_are_kept_and_only_all_zero_is_dead() -> None:
    acts = torch.zeros(24, TOKENS, 3)
    acts[:, :, 0] = -torch.rand(24, TOKENS) - 0.1  # a signed source that is never positive
    acts[:, :, 1] = torch.randn(24, TOKENS)  # signed, sometimes positive
    result = _collect(acts)
    negative, signed, zero = result.stats  # type: ignore[attr-defined]
    assert not negative.dead and not signed.dead and zero.dead
    assert negative.max_activation < 0 and negative.mean_activation < 0
    # never positive: it never fires (a token fires at >= 10 % of a positive max), so it keeps only
    # non-firing windows, and the pipeline skips it for firing in 0 windows
    kinds = {e.kind for e in result.exemplars if e.feature_index == 0}  # type: ignore[attr-defined]
    assert kinds == {"random"}
    assert "top" in {e.kind for e in result.exemplars if e.feature_index == 1}  # type: ignore[attr-defined]
    assert not [e for e in result.exemplars if e.feature_index == 2]  # type: ignore[attr-defined]
