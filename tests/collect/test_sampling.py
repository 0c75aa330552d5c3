"""The streaming sampler against brute force over synthetic activations (no model needed)."""

from pathlib import Path

import pytest
import torch

from autointerp.activations import FIRES_FRACTION
from autointerp.collect.keys import random_keys
from autointerp.collect.results import HISTOGRAM_EDGES, CollectionResult, Exemplar, SamplingPlan
from autointerp.collect.sampler import ExemplarSampler
from autointerp.collect.stream import StreamOptions, collect_exemplars
from autointerp.corpus.sources import Window

TOKENS = 6


def _corpus(n: int, n_features: int, seed: int = 0) -> tuple[list[Window], torch.Tensor]:
    """Windows whose first token id is their number, and a fixed activation tensor [n, tokens, features]."""
    generator = torch.Generator().manual_seed(seed)
    acts = torch.randn(n, TOKENS, n_features, generator=generator)
    acts[:, :, 0] = torch.where(acts[:, :, 0] > 1.8, acts[:, :, 0], 0.0)  # feature 0 is sparse
    acts[:, :, -1] = 0.0  # the last feature is dead (every value exactly 0)
    windows = [Window(doc_id=i // 4, offset=(i % 4) * TOKENS, token_ids=[i] * TOKENS) for i in range(n)]
    return windows, acts


def _lookup(acts: torch.Tensor) -> "callable":  # type: ignore[valid-type]
    return lambda ids: acts[ids[:, 0]]


def _collect(windows: list[Window], acts: torch.Tensor, activation_fn: object = None, **kwargs: object) -> object:
    """Collects with the defaults below; `kwargs` override plan fields (top_k, ..., seed) or stream options."""
    plan: dict[str, object] = {"top_k": 5, "random_windows": 4, "quantiles": 4, "per_quantile": 3, "seed": 0}
    options: dict[str, object] = {
        "feature_indices": list(range(acts.shape[2])),
        "window_tokens": TOKENS,
        "batch_size": 7,
        "device": torch.device("cpu"),
    }
    for key, value in kwargs.items():
        (plan if key in plan else options)[key] = value
    return collect_exemplars(
        windows,
        activation_fn or _lookup(acts),  # type: ignore[arg-type]
        SamplingPlan(**plan),  # type: ignore[arg-type]
        StreamOptions(**options),  # type: ignore[arg-type]
    )


def _by_kind(result: object, feature: int) -> dict[str, list[Exemplar]]:
    assert isinstance(result, CollectionResult)
    kinds: dict[str, list[Exemplar]] = {}
    for e in result.exemplars:
        if e.feature_index == feature:
            kinds.setdefault(e.kind, []).append(e)
    return kinds


def test_top_k_equals_a_full_sort_and_activations_belong_to_their_window() -> None:
    windows, acts = _corpus(120, 5)
    result = _collect(windows, acts)
    window_max = acts.amax(dim=1)  # [windows, features]
    for f in range(4):
        top = _by_kind(result, f)["top"]
        expected = window_max[:, f].topk(5)
        assert [e.window.token_ids[0] for e in top] == expected.indices.tolist()
        assert [e.split for e in top] == ["explain", "score", "explain", "score", "explain"]
        for e in top:
            assert e.activations == acts[e.window.token_ids[0], :, f].tolist()


def test_quantile_samples_fall_in_their_bin_of_the_final_max() -> None:
    windows, acts = _corpus(200, 5)
    result = _collect(windows, acts)
    for f in range(4):
        feature_max = float(acts[:, :, f].max())
        assert result.stats[f].max_activation == pytest.approx(feature_max)  # type: ignore[attr-defined]
        kinds = _by_kind(result, f)
        quantile_kinds = [k for k in kinds if k.startswith("quantile-")]
        assert quantile_kinds, kinds.keys()
        for kind in quantile_kinds:
            j = int(kind.split("-")[1])
            samples = kinds[kind]
            assert 1 <= len(samples) <= 3
            assert len({e.window.token_ids[0] for e in samples}) == len(samples)
            for e in samples:
                assert (j - 1) / 4 * feature_max < e.max_activation <= j / 4 * feature_max + 1e-6
            assert [e.split for e in samples] == ["explain", "score", "explain"][: len(samples)]


def test_quantile_bins_sample_uniformly_when_the_max_comes_first() -> None:
    """With the max in the first batch no re-binning happens: each bin is a uniform sample (top_k=1 keeps
    only the max as a top window, so no quantile-1 window is dropped as a duplicate of a top one)."""
    n = 60
    acts = torch.zeros(n, TOKENS, 1)
    acts[0, 0, 0] = 4.0  # the max, seen first
    acts[1:, 0, 0] = 0.5  # every other window in bin 1 of 4
    windows = [Window(doc_id=0, offset=i, token_ids=[i] * TOKENS) for i in range(n)]
    counts = torch.zeros(n)
    for seed in range(200):
        result = _collect(windows, acts, seed=seed, top_k=1, quantiles=4, per_quantile=2, random_windows=1)
        for e in _by_kind(result, 0)["quantile-1"]:
            counts[e.window.token_ids[0]] += 1
    assert counts[0] == 0 and counts[1:].sum() == 400
    assert counts[1:].min() >= 1 and counts[1:].max() <= 18  # expected 400 / 59 = 6.8 each


def test_random_windows_are_windows_where_the_feature_does_not_fire() -> None:
    windows, acts = _corpus(150, 5)
    result = _collect(windows, acts)
    sparse_random = _by_kind(result, 0)["random"]
    assert len(sparse_random) == 4
    assert all(e.max_activation <= 0 and e.split == "score" for e in sparse_random)
    for f in range(4):
        threshold = FIRES_FRACTION * float(acts[:, :, f].max())
        kinds = _by_kind(result, f)
        assert all(e.max_activation < threshold for e in kinds["random"]), f
        assert all(e.max_activation >= threshold for k, es in kinds.items() if k != "random" for e in es), f


def test_random_windows_are_the_smallest_keys_among_quiet_windows() -> None:
    """Windows either quiet or firing: the reported ones are exactly the 4 smallest random keys of the
    quiet ones, whatever the batch size (the reservoir is a function of the set of windows)."""
    n = 200
    windows, acts = _corpus(n, 2)
    generator = torch.Generator().manual_seed(11)
    quiet = torch.rand(n, generator=generator) < 0.7
    acts[:, :, 0] = torch.where(quiet, 0.01, 1.0).view(-1, 1) * torch.rand(n, TOKENS, generator=generator)
    keys = random_keys(0, 0, 2, 0, n, torch.device("cpu"))[0]
    threshold = FIRES_FRACTION * float(acts[:, :, 0].max())
    candidates = [w for w in range(n) if float(acts[w, :, 0].max()) < threshold]
    expected = sorted(candidates, key=lambda w: (float(keys[w]), w))[:4]
    for batch_size in (7, 64):
        result = _collect(windows, acts, batch_size=batch_size)
        assert [e.window.token_ids[0] for e in _by_kind(result, 0)["random"]] == expected


def test_too_few_quiet_or_firing_windows_keep_what_exists() -> None:
    """A dense feature with 2 quiet windows keeps 2 random windows, not 4; a feature firing in 2 windows
    keeps 2 top windows, never a window where it does not fire."""
    n = 60
    windows, acts = _corpus(n, 3)
    acts[:, :, 0] = 1.0 + torch.rand(n, TOKENS)  # fires in every window...
    acts[[5, 17], :, 0] = 0.0  # ...but two
    acts[:, :, 1] = 0.0
    acts[[3, 40], 2, 1] = torch.tensor([2.0, 3.0])  # fires in two windows only
    result = _collect(windows, acts)
    dense, sparse = _by_kind(result, 0), _by_kind(result, 1)
    assert sorted(e.window.token_ids[0] for e in dense["random"]) == [5, 17]
    assert [e.window.token_ids[0] for e in sparse["top"]] == [40, 3]
    assert [e.split for e in sparse["top"]] == ["explain", "score"]
    assert all(e.max_activation >= 0.3 for k, es in sparse.items() if k != "random" for e in es)


def test_statistics_histogram_and_dead_features() -> None:
    windows, acts = _corpus(90, 5)
    result = _collect(windows, acts)
    stats = result.stats  # type: ignore[attr-defined]
    dense = acts[:, :, 1]
    fires = dense >= FIRES_FRACTION * dense.max()  # density: the share of tokens at >= 10 % of the max
    assert stats[1].density == pytest.approx(float(fires.float().mean()), abs=0.01)
    assert stats[4].density == 0.0
    assert stats[1].mean_activation == pytest.approx(float(dense.mean()), abs=1e-6)
    assert sum(stats[1].histogram) == 90 and len(stats[1].histogram) == len(HISTOGRAM_EDGES) + 2
    assert stats[4].dead and stats[4].histogram[0] == 90
    assert not [e for e in result.exemplars if e.feature_index == 4]  # type: ignore[attr-defined]


def test_memory_is_bounded_by_what_sampling_keeps() -> None:
    plan = SamplingPlan(top_k=5, random_windows=4, quantiles=4, per_quantile=3)
    sizes = []
    for n in (70, 700):
        windows, acts = _corpus(n, 3)
        sampler = ExemplarSampler(3, TOKENS, plan, torch.device("cpu"))
        for start in range(0, n, 7):
            sampler.update(acts[start : start + 7], windows[start : start + 7])
        sampler.prune_windows()
        sizes.append((tuple(sampler.pool.shape), len(sampler.windows) <= 3 * (5 + 6 * 4 + 4 * 12)))
    # six random bins (quiet and five octaves), quantile bins kept four times over
    assert sizes[0] == sizes[1] == ((3, 5 + 6 * 4 + 4 * 12, TOKENS), True)


def test_resume_from_a_checkpoint_gives_the_same_exemplars(tmp_path: Path) -> None:
    windows, acts = _corpus(100, 4)
    reference = _collect(windows, acts)
    checkpoint = tmp_path / "state.pt"
    calls = {"n": 0}

    def failing(ids: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt
        return acts[ids[:, 0]]

    options = {"checkpoint": checkpoint, "checkpoint_every": 4, "fingerprint": "run-a"}
    with pytest.raises(KeyboardInterrupt):
        _collect(windows, acts, failing, **options)
    assert checkpoint.is_file()
    seen: list[int] = []

    def recording(ids: torch.Tensor) -> torch.Tensor:
        seen.extend(ids[:, 0].tolist())
        return acts[ids[:, 0]]

    resumed = _collect(windows, acts, recording, **options)
    assert seen[0] == 56  # 8 batches of 7 were checkpointed; the 9th is redone
    assert resumed.exemplars == reference.exemplars  # type: ignore[attr-defined]
    assert resumed.stats == reference.stats  # type: ignore[attr-defined]
    other = _collect(windows, acts, checkpoint=checkpoint, checkpoint_every=4, fingerprint="run-b")
    assert other.exemplars == reference.exemplars  # type: ignore[attr-defined]


@pytest.mark.parametrize("top_k, random_windows, quantiles, per_quantile", [(5, 4, 4, 3), (3, 0, 2, 1), (4, 2, 0, 0)])
def test_every_merge_keeps_the_same_items(top_k: int, random_windows: int, quantiles: int, per_quantile: int) -> None:
    """The compiled CPU loop, the gated tensor merge and the full tensor merge agree exactly.

    Chunked input (one tensor per group of features) is merged as the same tensor whole. Pool
    rows may be assigned differently, so the comparison is on kept items and their activations.
    The full merge re-bins every kept item at every batch; the other two only when a feature's
    power-of-two top rises (feature 2's max rises in 15 of 50 batches, 10 of them below the same top).
    """
    windows, acts = _corpus(400, 12, seed=3)
    acts[:, :, 2] *= torch.linspace(0.1, 3.0, 400).view(-1, 1)  # a max that keeps rising: re-binning
    acts[:, :, -1] = -torch.rand(400, TOKENS)  # never positive (signed, not dead), without ties
    plan = SamplingPlan(top_k, random_windows, quantiles, per_quantile, seed=1)
    compiled, gated, full = (ExemplarSampler(12, TOKENS, plan, torch.device("cpu")) for _ in range(3))
    gated.compiled = full.compiled = full.gate = False
    assert compiled.compiled
    merged_rows = []
    for start in range(0, 400, 8):
        batch = acts[start : start + 8]
        before = gated.value.clone()
        for sampler in (compiled, gated):
            sampler.update([batch[:, :, :5], batch[:, :, 5:]], windows[start : start + 8])
        full.update(batch, windows[start : start + 8])
        merged_rows.append(int((gated.value != before).any(dim=1).sum()))
    for other in (gated, full):
        for name in ("value", "key", "window", "act_max", "token_histogram", "histogram"):
            assert torch.equal(getattr(compiled, name), getattr(other, name)), name
        assert torch.allclose(compiled.act_sum, other.act_sum)  # float sums: the order of summation differs
        assert compiled.exemplars(compiled.stats()) == other.exemplars(other.stats())
    assert merged_rows[-1] < 12  # late batches leave most features alone


def test_quantile_bins_hold_the_windows_the_corpus_has() -> None:
    """A reported quantile bin drew on two kept bins' few items and came back short when they were top
    windows (dropped as repeats) or quiet: 52 of 240 bins below. Four kept bins per reported one, with top
    windows left out of the draw: at most 15."""
    short = total = 0
    for seed in range(30):
        windows, acts = _corpus(300, 4, seed=seed)
        result = _collect(windows, acts, seed=seed, top_k=8, quantiles=4, per_quantile=2)
        for f in (1, 2):
            window_max = acts[:, :, f].amax(dim=1)
            feature_max = float(window_max.max())
            top = set(window_max.topk(8).indices.tolist())
            kinds = _by_kind(result, f)
            for j in range(1, 5):
                low, high = max((j - 1) / 4, FIRES_FRACTION) * feature_max, j / 4 * feature_max
                there = [w for w in range(300) if low <= float(window_max[w]) <= high and w not in top]
                total += 1
                short += len(kinds.get(f"quantile-{j}", [])) < min(2, len(there))
    assert total == 240 and short <= 15
