"""Co-occurrence neighbours: counts equal a brute-force count over every window, and shards merge exactly."""

import itertools

import torch

from autointerp.activations import fires
from autointerp.collect.merge_shards import merge_states
from autointerp.collect.results import SamplingPlan
from autointerp.collect.sampler import ExemplarSampler
from autointerp.corpus.sources import Window
from autointerp.neighbours.cooccurrence import CooccurrenceLog

TOKENS, FEATURES, K = 4, 7, 3
CPU = torch.device("cpu")
PLAN = SamplingPlan(top_k=3, random_windows=2, quantiles=2, per_quantile=1, seed=1)
IDS = [f"m/mlp.0/{i}" for i in range(FEATURES)]


def _corpus(n: int) -> tuple[list[Window], torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    acts = torch.relu(torch.randn(n, TOKENS, FEATURES, generator=generator))
    acts[:, :, 1] = torch.where(acts[:, :, 1] > 1.2, acts[:, :, 1], 0.0)  # sparse
    acts[:, :, 4] = acts[:, :, 1] * 0.5 + 0.01 * acts[:, :, 4]  # fires with feature 1
    acts[:, :, 2] *= torch.linspace(0.01, 9.0, n).view(-1, 1)  # a max that keeps rising: early entries drop
    acts[:, :, 3] = (torch.arange(n) % 3 == 0).float().view(-1, 1) * 2.0  # equal maxima: ties
    acts[:, :, 6] = 0.0  # dead
    return [Window(doc_id=i, offset=0, token_ids=[i] * TOKENS) for i in range(n)], acts


def _stream(windows: list[Window], acts: torch.Tensor, start: int, end: int, log: CooccurrenceLog) -> ExemplarSampler:
    sampler = ExemplarSampler(FEATURES, TOKENS, PLAN, CPU)
    sampler.cooccurrence = log
    sampler.windows_seen = start
    for first in range(start, end, 8):
        last = min(first + 8, end)
        sampler.update(acts[first:last], windows[first:last])
    return sampler


def _brute_force(acts: torch.Tensor) -> tuple[set[tuple[int, int]], list[tuple[str, str, float, int, int]]]:
    """Every (window, feature) that fires by the evidence rule, and each feature's k nearest by Jaccard."""
    window_max = acts.amax(dim=1).tolist()  # (windows, features)
    peak = [max(w[f] for w in window_max) for f in range(FEATURES)]
    fired = {(w, f) for w, row in enumerate(window_max) for f in range(FEATURES) if fires(row[f], peak[f])}
    own = [sum(1 for _, g in fired if g == f) for f in range(FEATURES)]
    expected = []
    for a in range(FEATURES):
        candidates = []
        for b in range(FEATURES):
            both = sum(1 for w in range(acts.shape[0]) if (w, a) in fired and (w, b) in fired)
            if b != a and both:
                candidates.append((-both / (own[a] + own[b] - both), -both, b))
        for rank, (jaccard, both, b) in enumerate(sorted(candidates)[:K], start=1):
            expected.append((IDS[a], IDS[b], -jaccard, -both, rank))
    return fired, expected


def _rows(log: CooccurrenceLog, peak: list[float]) -> list[tuple[str, str, float, int, int]]:
    return [(n.feature, n.other, n.value, n.count or 0, n.rank) for n in log.neighbours(IDS, peak)]


def test_counts_equal_a_brute_force_count_and_shards_merge_exactly() -> None:
    windows, acts = _corpus(240)
    fired, expected = _brute_force(acts)
    assert len(expected) > 5 and expected[0][0] != expected[-1][0]
    single = _stream(windows, acts, 0, 240, CooccurrenceLog(FEATURES, K, compact_at=16))
    peak = [s.max_activation for s in single.stats()]
    log = single.cooccurrence
    assert log is not None
    firing = log.firing(peak)
    assert firing is not None
    assert set(zip(firing.window.tolist(), firing.feature.tolist(), strict=True)) == fired
    got = _rows(log, peak)
    assert [(a, b, c, r) for a, b, _, c, r in got] == [(a, b, c, r) for a, b, _, c, r in expected]
    assert all(abs(g[2] - e[2]) < 1e-12 for g, e in zip(got, expected, strict=True))
    assert ("m/mlp.0/1", "m/mlp.0/4") in {(a, b) for a, b, _, _, r in got if r == 1}  # the planted pair

    for bounds in [(0, 80, 160, 240), (0, 8, 240), (0, 232, 240)]:
        states = [
            _stream(windows, acts, start, end, CooccurrenceLog(FEATURES, K, compact_at=16)).state_dict()
            for start, end in itertools.pairwise(bounds)
        ]
        merged = merge_states(states[::-1], TOKENS, PLAN)
        assert merged.cooccurrence is not None
        assert _rows(merged.cooccurrence, [s.max_activation for s in merged.stats()]) == got, bounds


def test_the_log_survives_a_checkpoint_and_stops_past_its_cap() -> None:
    windows, acts = _corpus(64)
    first = _stream(windows, acts, 0, 32, CooccurrenceLog(FEATURES, K))
    resumed = ExemplarSampler(FEATURES, TOKENS, PLAN, CPU)
    resumed.cooccurrence = CooccurrenceLog(FEATURES, K)
    resumed.load_state_dict(first.state_dict())
    for start in range(32, 64, 8):
        resumed.update(acts[start : start + 8], windows[start : start + 8])
    whole = _stream(windows, acts, 0, 64, CooccurrenceLog(FEATURES, K))
    peak = [s.max_activation for s in whole.stats()]
    assert resumed.cooccurrence is not None and whole.cooccurrence is not None
    assert _rows(resumed.cooccurrence, peak) == _rows(whole.cooccurrence, peak)

    capped = _stream(windows, acts, 0, 64, CooccurrenceLog(FEATURES, K, max_entries=10, compact_at=16))
    assert capped.cooccurrence is not None and capped.cooccurrence.overflowed
    assert capped.cooccurrence.neighbours(IDS, peak) == []
