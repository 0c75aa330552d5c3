import torch

from autointerp.collect.results import SamplingPlan
from autointerp.collect.stream import StreamOptions, collect_exemplars
from autointerp.corpus.sources import Window


def _windows(n: int, tokens: int, seed: int = 0) -> list[Window]:
    generator = torch.Generator().manual_seed(seed)
    return [
        Window(
            doc_id=i // 3,
            offset=(i % 3) * tokens,
            token_ids=torch.randint(0, 50, (tokens,), generator=generator).tolist(),
        )
        for i in range(n)
    ]


def _planted(ids: torch.Tensor) -> torch.Tensor:
    """Feature 0 fires on token 7; feature 1 is token id / 50; feature 2 is always 0 (dead)."""
    ids = ids.float()
    return torch.stack([(ids == 7).float() * 2.0, ids / 50.0, torch.zeros_like(ids)], dim=-1)


def _collect(windows: list[Window], seed: int, random_windows: int = 3):  # type: ignore[no-untyped-def]
    plan = SamplingPlan(top_k=4, random_windows=random_windows, seed=seed)
    return collect_exemplars(windows, _planted, plan, StreamOptions([0, 1, 2], len(windows[0].token_ids), batch_size=4))


def test_random_windows_are_seeded_and_bounded() -> None:
    def sample(seed: int) -> list[int]:
        result = _collect(_windows(100, 4), seed, random_windows=4)
        return [e.window.doc_id * 10 + e.window.offset for e in result.exemplars if e.kind == "random"]

    assert sample(3) == sample(3)
    assert len(sample(3)) == 4  # the other live feature fires in every window: it has no non-firing ones
    assert sample(3) != sample(4)


def test_collect_exemplars_on_planted_features() -> None:
    windows = _windows(30, 8)
    result = collect_exemplars(
        windows, _planted, SamplingPlan(top_k=4, random_windows=3), StreamOptions([0, 1, 2], 8, batch_size=4)
    )
    fires_on_7, by_id, dead = result.stats
    assert dead.dead and not fires_on_7.dead
    assert fires_on_7.max_activation == 2.0
    # ids 5..49 fire (>= 10 % of 0.98); id 5 (0.1) shares a histogram bin with the threshold 0.098
    ids = [t for w in windows for t in w.token_ids]
    exact = sum(t >= 5 for t in ids) / len(ids)
    assert abs(by_id.density - exact) <= ids.count(5) / len(ids)
    assert fires_on_7.density == ids.count(7) / len(ids) and dead.density == 0.0
    top = [e for e in result.exemplars if e.feature_index == 0 and e.kind == "top"]
    assert [e.rank for e in top] == [0, 1, 2, 3]
    assert [e.split for e in top] == ["explain", "score", "explain", "score"]
    for exemplar in top:
        assert 7 in exemplar.window.token_ids  # every top window holds the planted token
        assert exemplar.activations == [2.0 if t == 7 else 0.0 for t in exemplar.window.token_ids]
    random = [e for e in result.exemplars if e.feature_index == 1 and e.kind == "random"]
    # the feature fires on every window: no window is non-activating, and none is passed off as one
    assert random == []
    assert not [e for e in result.exemplars if e.feature_index == 2], "dead features get no exemplars"
