import torch

from autointerp.collect import RandomWindowReservoir, TopWindowTracker, collect_exemplars
from autointerp.corpus import Window


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
    """Feature 0 fires on token 7; feature 1 is token id / 50; feature 2 never fires."""
    ids = ids.float()
    return torch.stack([(ids == 7).float() * 2.0, ids / 50.0, torch.zeros_like(ids) - 1.0], dim=-1)


def test_tracker_keeps_the_windows_with_the_highest_max_like_a_full_sort() -> None:
    generator = torch.Generator().manual_seed(1)
    acts = torch.randn(40, 6, 3, generator=generator)  # [windows, tokens, features]
    tracker = TopWindowTracker(n_features=3, k=5, window_tokens=6, device=torch.device("cpu"))
    for start in range(0, 40, 7):
        batch = acts[start : start + 7]
        positions = torch.tensor([[w, 0] for w in range(start, start + len(batch))])
        tracker.update(batch, torch.zeros(len(batch), 6, dtype=torch.long), positions)
    expected = acts.amax(dim=1).T.topk(5, dim=1)
    assert torch.equal(tracker.values, expected.values)
    assert torch.equal(tracker.positions[:, :, 0], expected.indices)
    assert torch.equal(tracker.activations[1, 0], acts[expected.indices[1, 0], :, 1])


def test_reservoir_is_seeded_and_bounded() -> None:
    def sample(seed: int) -> list[int]:
        reservoir = RandomWindowReservoir(size=4, seed=seed)
        for window in _windows(100, 4):
            reservoir.offer(window, torch.zeros(4, 1))
        return [w.doc_id * 10 + w.offset for w, _ in reservoir.items]

    assert sample(3) == sample(3)
    assert len(sample(3)) == 4
    assert sample(3) != sample(4)


def test_collect_exemplars_on_planted_features() -> None:
    windows = _windows(30, 8)
    result = collect_exemplars(
        windows,
        _planted,
        feature_indices=[0, 1, 2],
        window_tokens=8,
        batch_size=4,
        top_k=4,
        random_windows=3,
        seed=0,
        device=torch.device("cpu"),
    )
    fires_on_7, by_id, dead = result.stats
    assert dead.dead and not fires_on_7.dead
    assert fires_on_7.max_activation == 2.0
    assert by_id.density == 1 - sum(w.token_ids.count(0) for w in windows) / (30 * 8)
    top = [e for e in result.exemplars if e.feature_index == 0 and e.kind == "top"]
    assert [e.rank for e in top] == [0, 1, 2, 3]
    assert [e.split for e in top] == ["explain", "score", "explain", "score"]
    for exemplar in top:
        assert 7 in exemplar.window.token_ids  # every top window holds the planted token
        assert exemplar.activations == [2.0 if t == 7 else 0.0 for t in exemplar.window.token_ids]
    random = [e for e in result.exemplars if e.feature_index == 1 and e.kind == "random"]
    assert len(random) == 3 and all(e.split == "score" for e in random)
    assert not [e for e in result.exemplars if e.feature_index == 2], "dead features get no exemplars"
