"""Cosine neighbours: the blocked top-k equals a dense reference, and the universe is searched by hook."""

import torch

from autointerp.neighbours.cosine import blocked_cosine_topk, cosine_neighbours


def _dense_topk(queries: torch.Tensor, universe: torch.Tensor, k: int, exclude: torch.Tensor) -> torch.Tensor:
    sims = torch.nn.functional.normalize(queries, dim=1) @ torch.nn.functional.normalize(universe, dim=1).T
    sims[torch.arange(len(exclude)), exclude] = float("-inf")
    return sims.topk(k, dim=1).indices


def test_blocked_topk_equals_the_dense_reference_at_every_block_size() -> None:
    generator = torch.Generator().manual_seed(0)
    universe = torch.randn(300, 24, generator=generator) * torch.rand(300, 1, generator=generator)  # any norms
    picked = torch.randperm(300, generator=generator)[:70]
    expected = _dense_topk(universe[picked], universe, 5, picked)
    for block_elements in (1, 300, 301 * 7, 1 << 24):  # one row per block, ..., everything at once
        values, indices = blocked_cosine_topk(universe[picked], universe, 5, picked, block_elements)
        assert torch.equal(indices, expected), block_elements
        assert values.shape == (70, 5) and bool((values[:, :-1] >= values[:, 1:]).all())
        assert not bool((indices == picked.unsqueeze(1)).any())  # never itself
    unit = torch.nn.functional.normalize(universe, dim=1)
    cos = (unit[picked].unsqueeze(1) * unit[expected]).sum(dim=2)
    assert torch.allclose(values, cos, atol=1e-5)


def test_neighbours_are_searched_within_the_hook_and_flagged_outside_the_run() -> None:
    vectors = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [1.0, 0.01], [0.1, 1.0], [0.0, 0.0]])
    ids = ["m/mlp.0/0", "m/mlp.0/1", "m/mlp.0/2", "m/mlp.1/0", "m/mlp.1/1", "m/mlp.1/2"]
    hooks = ["a", "a", "a", "b", "b", "b"]
    found = cosine_neighbours(["m/mlp.0/0", "m/mlp.0/2", "m/mlp.1/1"], ids, hooks, vectors, k=2)
    by_feature = {(n.feature, n.rank): n for n in found}
    assert by_feature["m/mlp.0/0", 1].other == "m/mlp.0/1" and not by_feature["m/mlp.0/0", 1].other_in_run
    assert by_feature["m/mlp.0/0", 2].other == "m/mlp.0/2" and by_feature["m/mlp.0/0", 2].other_in_run
    assert by_feature["m/mlp.1/1", 1].other == "m/mlp.1/0"  # not m/mlp.0/2, which is in another hook
    assert {n.kind for n in found} == {"cosine"} and len(found) == 6
    together = cosine_neighbours(["m/mlp.1/1"], ids, hooks, vectors, k=1, scope="source")
    assert [n.other for n in together] == ["m/mlp.0/2"]
