"""Shards of a corpus merge into exactly the state one pass over it keeps (no model needed)."""

import itertools

import pytest
import torch

from autointerp.collect.histogram import fold_below
from autointerp.collect.merge_shards import ShardMergeError, merge_states
from autointerp.collect.results import SamplingPlan
from autointerp.collect.sampler import ExemplarSampler
from autointerp.corpus.sources import Window

TOKENS = 5
CPU = torch.device("cpu")


def _corpus(n: int, n_features: int) -> tuple[list[Window], torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    acts = torch.randn(n, TOKENS, n_features, generator=generator)
    acts[:, :, 0] = torch.where(acts[:, :, 0] > 1.5, acts[:, :, 0], 0.0)  # sparse
    acts[:, :, 1] *= torch.linspace(0.05, 6.0, n).view(-1, 1)  # a max that keeps rising (doubles often)
    acts[:, :, 2] = torch.linspace(-5.0, 20.0, n).flip(0).view(-1, 1)  # the max comes first
    acts[:, :, 3] = (torch.arange(n) % 4).float().view(-1, 1)  # many equal window maxima: ties
    acts[:, :, -1] = -1.0  # dead
    windows = [Window(doc_id=i, offset=0, token_ids=[i] * TOKENS) for i in range(n)]
    return windows, acts


def _stream(
    sampler: ExemplarSampler, windows: list[Window], acts: torch.Tensor, start: int, end: int, batch: int
) -> None:
    sampler.windows_seen = start
    for first in range(start, end, batch):
        last = min(first + batch, end)
        sampler.update(acts[first:last], windows[first:last])


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("bounds", [(0, 80, 160, 240, 300), (0, 8, 16, 300), (0, 296, 300)])
def test_shards_merge_into_the_single_pass_state(compiled: bool, bounds: tuple[int, ...]) -> None:
    windows, acts = _corpus(300, 6)
    plan = SamplingPlan(top_k=4, random_windows=3, quantiles=3, per_quantile=2, seed=5)
    single = ExemplarSampler(6, TOKENS, plan, CPU)
    single.compiled = compiled
    _stream(single, windows, acts, 0, 300, 8)
    states = []
    for start, end in itertools.pairwise(bounds):
        shard = ExemplarSampler(6, TOKENS, plan, CPU)
        shard.compiled = compiled
        _stream(shard, windows, acts, start, end, 8)
        states.append(shard.state_dict())
    merged = merge_states(states[::-1], TOKENS, plan)  # the order of shards does not matter either
    for name in ("value", "key", "window", "act_max", "histogram"):
        assert torch.equal(getattr(single, name), getattr(merged, name)), name
    # token histograms: equal in every bin a density can read (the rest is folded into bin 0 by split)
    folded = [fold_below(s.token_histogram, s.act_max) for s in (single, merged)]
    assert torch.equal(*folded)
    assert torch.equal(single.act_sum, merged.act_sum)  # batch-aligned shards: the same float sums
    assert merged.tokens == single.tokens
    assert merged.exemplars(merged.stats()) == single.exemplars(single.stats())
    assert merged.stats() == single.stats()


def test_overlapping_shards_are_refused() -> None:
    windows, acts = _corpus(40, 6)
    plan = SamplingPlan(top_k=2, random_windows=1)
    shards = []
    for _ in range(2):
        sampler = ExemplarSampler(6, TOKENS, plan, CPU)
        _stream(sampler, windows, acts, 0, 40, 8)
        shards.append(sampler.state_dict())
    with pytest.raises(ShardMergeError, match="overlap"):
        merge_states(shards, TOKENS, plan)
