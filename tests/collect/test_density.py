"""Density is the share of tokens that fire (>= 10 % of the max), read off a per-feature token histogram."""

import math
from pathlib import Path

import pytest
import torch

from autointerp.activations import FIRES_FRACTION, exact_density, fires
from autointerp.collect.histogram import TOKEN_BINS, add_to_histogram, bin_of, densities, fold_below, token_bins
from autointerp.collect.keys import random_keys
from autointerp.collect.merge_batch_cpu import _random_key, key_base
from autointerp.collect.merge_shards import merge_states
from autointerp.collect.results import SamplingPlan
from autointerp.collect.sampler import ExemplarSampler
from autointerp.collect.stage import run_collect
from autointerp.collect.stream import load_checkpoint, save_checkpoint
from autointerp.corpus.sources import Window, corpus_windows
from autointerp.store.database import Store
from autointerp.subject import SubjectModel, build_feature_source
from tests.conftest import tiny_config

CPU = torch.device("cpu")


def _share(acts: torch.Tensor, threshold: float) -> float:
    return float((acts >= threshold).double().mean())


def _known_arrays() -> list[torch.Tensor]:
    """Activations [windows, tokens] of distinct shapes: gated-MLP-like, heavy-tailed, tiny, huge, sparse."""
    g = torch.Generator().manual_seed(3)
    normal = torch.randn(400, 32, generator=g)
    return [
        normal,  # about half positive, as a gated MLP neuron
        normal.relu() ** 4,  # heavy tail: few tokens near the max
        normal * 1e-5,  # small values
        normal.abs() * 3e6,  # large values, all positive
        torch.where(normal > 2.0, normal, 0.0),  # sparse
        torch.full((10, 8), 2.5),  # constant: every token fires
        torch.linspace(0.0, 1.0, 1001).view(7, 143),  # uniform: the threshold inside a bin
    ]


@pytest.mark.parametrize("index", range(7))
def test_histogram_density_is_the_exact_share_within_the_stated_precision(index: int) -> None:
    acts = _known_arrays()[index]
    histogram = torch.zeros((1, TOKEN_BINS), dtype=torch.long)
    add_to_histogram(histogram, acts.unsqueeze(-1), 0)
    peak = float(acts.max())
    estimate = float(densities(histogram, acts.max().view(1))[0])
    exact = exact_density(acts.tolist())
    threshold = FIRES_FRACTION * peak
    assert exact == pytest.approx(_share(acts, threshold))
    # the stated precision: between the exact shares at 9/8 and 8/9 of the threshold, and within
    # the threshold bin's count of the exact value
    assert _share(acts, threshold * 9 / 8) - 1e-12 <= estimate <= _share(acts, threshold * 8 / 9) + 1e-12
    assert abs(estimate - exact) <= int(histogram[0, bin_of(threshold)]) / acts.numel() + 1e-12


def test_fires_is_the_normalised_level_of_at_least_one() -> None:
    assert fires(1.0, 10.0) and not fires(0.99, 10.0)
    assert not fires(0.0, 0.0) and not fires(5.0, -1.0)  # nothing fires when the max is <= 0
    assert exact_density([[0.0, -1.0]]) == 0.0 and exact_density([]) == 0.0


def test_bins_are_fixed_and_agree_between_the_tensor_and_scalar_forms() -> None:
    values = torch.tensor([-3.0, 0.0, 1e-30, 2.0**-24, 0.1, 1.0, 1.125, 7.9, 2.0**24, 3e38])
    assert token_bins(values).tolist() == [bin_of(v) for v in values.tolist()]
    assert token_bins(values)[0] == 0 and token_bins(values)[-1] == TOKEN_BINS - 1
    # each regular bin spans at most a factor 9/8
    for value in (0.1, 1.0, 1.125, 7.9, 1000.0):
        below, above = math.nextafter(value, 0), value * 9 / 8
        assert bin_of(above) > bin_of(below)


def test_densities_of_dead_and_negative_features_are_zero() -> None:
    acts = torch.stack([torch.zeros(5, 4), -torch.rand(5, 4)], dim=-1)
    histogram = torch.zeros((2, TOKEN_BINS), dtype=torch.long)
    add_to_histogram(histogram, acts, 0)
    assert densities(histogram, acts.amax(dim=(0, 1))).tolist() == [0.0, 0.0]


def _stream(sampler: ExemplarSampler, acts: torch.Tensor, start: int, end: int, batch: int = 8) -> None:
    sampler.windows_seen = start
    for first in range(start, end, batch):
        last = min(first + batch, end)
        windows = [Window(doc_id=i, offset=0, token_ids=[i] * acts.shape[1]) for i in range(first, last)]
        sampler.update(acts[first:last], windows)


def _features(n: int) -> torch.Tensor:
    """[windows, tokens, 4]: signed, heavy-tailed, negated (a `-` pole reads relu(-a)), dead."""
    g = torch.Generator().manual_seed(11)
    a = torch.randn(n, 6, generator=g)
    return torch.stack([a, a.relu() ** 3, (-a).relu(), torch.zeros_like(a)], dim=-1)


@pytest.mark.parametrize("compiled", [True, False])
def test_two_halves_merge_into_the_density_of_the_whole(compiled: bool) -> None:
    acts = _features(96)
    plan = SamplingPlan(top_k=2, random_windows=2, quantiles=2, per_quantile=1)
    whole = ExemplarSampler(4, 6, plan, CPU)
    whole.compiled = compiled
    _stream(whole, acts, 0, 96)
    halves = []
    for start, end in ((48, 96), (0, 48)):
        half = ExemplarSampler(4, 6, plan, CPU)
        half.compiled = compiled
        _stream(half, acts, start, end)
        halves.append(half.state_dict())
    merged = merge_states(halves, 6, plan)
    # bins below 10 % of a running max are counted in bin 0, which depends on the split; the bins a
    # density reads do not, nor does the total
    assert torch.equal(
        fold_below(merged.token_histogram, merged.act_max), fold_below(whole.token_histogram, whole.act_max)
    )
    assert torch.equal(merged.token_histogram.sum(dim=1), whole.token_histogram.sum(dim=1))
    assert [s.density for s in merged.stats()] == [s.density for s in whole.stats()]
    for f, stats in enumerate(whole.stats()):
        column = acts[:, :, f]
        assert abs(stats.density - exact_density(column.tolist())) <= 0.02, f
    assert whole.stats()[3].density == 0.0


def test_compiled_and_tensor_histograms_are_equal() -> None:
    acts = _features(40) * torch.tensor([1.0, 1e4, 1e-6, 1.0])
    samplers = []
    for compiled in (True, False):
        sampler = ExemplarSampler(4, 6, SamplingPlan(top_k=2, random_windows=1), CPU)
        sampler.compiled = compiled
        _stream(sampler, acts, 0, 40)
        samplers.append(sampler)
    assert torch.equal(samplers[0].token_histogram, samplers[1].token_histogram)
    assert int(samplers[0].token_histogram.sum()) == 40 * 6 * 4


@pytest.mark.parametrize("compiled", [True, False])
def test_counting_low_bins_as_bin_0_leaves_every_density_as_a_full_histogram_gives(compiled: bool) -> None:
    """The streamed histogram folds bins below 10 % of the running max into bin 0; a histogram of every
    token in its own bin gives the same densities, bit for bit, and the same total."""
    acts = _features(64) * torch.linspace(0.2, 3.0, 64).view(-1, 1, 1)  # maxima that keep rising
    sampler = ExemplarSampler(4, 6, SamplingPlan(top_k=2, random_windows=1), CPU)
    sampler.compiled = compiled
    _stream(sampler, acts, 0, 64)
    full = torch.zeros((4, TOKEN_BINS), dtype=torch.long)
    add_to_histogram(full, acts, 0)
    assert not torch.equal(full, sampler.token_histogram)  # something was folded
    assert torch.equal(densities(full, sampler.act_max), densities(sampler.token_histogram, sampler.act_max))
    assert torch.equal(fold_below(full, sampler.act_max), fold_below(sampler.token_histogram, sampler.act_max))
    assert torch.equal(full.sum(dim=1), sampler.token_histogram.sum(dim=1))


def test_the_compiled_merge_hashes_the_same_random_keys() -> None:
    for seed, stream in ((0, 0), (7, 1), (123456789, 1)):
        keys = random_keys(seed, stream, 50, 1_000_000, 20, CPU)
        base = key_base(seed, stream)
        hashed = [[float(_random_key(base, f, 1_000_000 + w)) for w in range(20)] for f in range(50)]
        assert hashed == keys.tolist()


def test_the_token_histogram_is_checkpointed_and_old_checkpoints_are_ignored(tmp_path: Path) -> None:
    acts = _features(32)
    plan = SamplingPlan(top_k=2, random_windows=1)
    sampler = ExemplarSampler(4, 6, plan, CPU)
    _stream(sampler, acts, 0, 32)
    path = tmp_path / "run.collect.pt"
    save_checkpoint(path, "fp", sampler)
    resumed = ExemplarSampler(4, 6, plan, CPU)
    assert load_checkpoint(path, "fp", resumed)
    assert torch.equal(resumed.token_histogram, sampler.token_histogram)
    old = sampler.state_dict()
    del old["token_histogram"]  # a checkpoint from before density used the histogram
    torch.save({"fingerprint": "fp", "state": old}, path)
    fresh = ExemplarSampler(4, 6, plan, CPU)
    assert not load_checkpoint(path, "fp", fresh)
    assert fresh.windows_seen == 0 and int(fresh.token_histogram.sum()) == 0


def test_a_collection_run_stores_the_share_of_tokens_at_10_percent_of_the_max(
    subject: SubjectModel, tmp_path: Path
) -> None:
    """The real model on a tiny corpus, both poles of two gated-MLP neurons: the stored density is
    the exact share of tokens read (each window's first two are not) at >= 10 % of each pole's max, not the
    share above 0 (about half)."""
    config = tiny_config(tmp_path, "features.sign=both", "features.indices=[5, 400]", "corpus.max_windows=16")
    store = Store(config.store.path)
    store.migrate()
    run_id = config.resolved_run_id()
    store.start_run(run_id, {}, config.config_hash(), "test", None)
    run_collect(config, store, run_id)
    stored = {f.id: f for f in store.features(run_id)}
    source = build_feature_source(config.features, subject)
    corpus = config.corpus
    windows = corpus_windows(subject.tokenizer, corpus)
    ids = torch.tensor([w.token_ids for w in windows], device=subject.device)
    with torch.inference_mode():
        given = source.activations(ids).float().cpu()  # [windows, tokens, features]; `-` poles are relu(-a)
    assert source.skipped_tokens == 2 and float(given[:, :2].abs().sum()) == 0.0
    acts = given[:, 2:]  # the tokens read
    assert len(stored) == 4
    for f, feature_id in enumerate(source.feature_ids):
        column, row = acts[:, :, f], stored[feature_id]
        assert row.max_activation == pytest.approx(float(column.max()), rel=1e-5)
        assert row.mean_activation == pytest.approx(float(column.double().mean()), rel=1e-5)
        exact = exact_density(column.tolist())
        threshold = FIRES_FRACTION * float(column.max())
        in_bin = (token_bins(column) == bin_of(threshold)).sum().item() / column.numel()
        assert abs(row.density - exact) <= in_bin + 1e-9, feature_id
        assert row.density <= float((column > 0).double().mean()) + 1e-9
    positive = [float((acts[:, :, f] > 0).double().mean()) for f in range(4)]
    assert sum(positive) > sum(stored[i].density for i in source.feature_ids)  # the old number was larger


@pytest.mark.parametrize("compiled", [True, False])
def test_skipped_first_tokens_are_left_out_of_the_mean_and_density(compiled: bool) -> None:
    """A source that does not read each window's first token gives it as 0 (`SkipFirstTokens`); the sampler
    told so counts exactly what a sampler fed the windows without that token counts."""
    acts = _features(48) + 0.5
    blanked = acts.clone()
    blanked[:, 0] = 0.0
    plan = SamplingPlan(top_k=2, random_windows=1)
    skipping = ExemplarSampler(4, 6, plan, CPU, skipped_tokens=1)
    shorter = ExemplarSampler(4, 5, plan, CPU)
    for sampler, values in ((skipping, blanked), (shorter, acts[:, 1:].contiguous())):
        sampler.compiled = compiled
        _stream(sampler, values, 0, 48)
    assert skipping.tokens == shorter.tokens == 48 * 5
    assert torch.equal(
        fold_below(skipping.token_histogram, skipping.act_max), fold_below(shorter.token_histogram, shorter.act_max)
    )
    for kept, reference in zip(skipping.stats(), shorter.stats(), strict=True):
        assert kept.density == reference.density and kept.mean_activation == pytest.approx(reference.mean_activation)
    unread = ExemplarSampler(4, 6, plan, CPU)  # the same zeros counted as read tokens: a lower density
    unread.compiled = compiled
    _stream(unread, blanked, 0, 48)
    assert all(u.density < k.density for u, k in zip(unread.stats(), skipping.stats(), strict=True) if k.density)
