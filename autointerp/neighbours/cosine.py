"""Neighbours by write-direction cosine: blocked top-k, never the full square matrix.

A feature's write direction is what one unit of its activation adds to the residual stream
(`FeatureSource.write_directions`): an MLP neuron's down-projection column, an SAE or transcoder latent's
decoder row, a direction's row. Planted features write nothing and have no cosine neighbours.

Where neighbours are searched: among *every* feature of the same dictionary or layer (the universe a
researcher means by "the nearest latent"), not only the run's sample; a neighbour outside the run is kept
with `other_in_run = False` (it has no exemplars or page in this run). With `scope = "hook"` (the default)
an MLP run over several layers searches each layer's 1,536 neurons separately; `scope = "source"` searches
all of them together (vectors at different layers share the residual basis, so the cosine is defined).

Memory: the unit-normalised universe (n x d) plus one block of `rows x n` similarities, the block size
chosen so a block holds at most `max_block_elements` floats (64 MiB by default), whatever n.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import torch

from autointerp.neighbours.records import Neighbour

log = logging.getLogger(__name__)

CosineScope = Literal["hook", "source"]
"""Search each hook point's features separately (`hook`) or every feature of the source together."""

MAX_BLOCK_ELEMENTS = 1 << 24
"""Similarities held at once (floats): a block of query rows times the universe's size."""


def unit_rows(vectors: torch.Tensor) -> torch.Tensor:
    """Returns the rows of `vectors` [n, d] scaled to unit length (float32; a zero row stays zero)."""
    vectors = vectors.float()
    return vectors / vectors.norm(dim=1, keepdim=True).clamp(min=1e-12)


def blocked_cosine_topk(
    queries: torch.Tensor,
    universe: torch.Tensor,
    k: int,
    exclude: torch.Tensor | None = None,
    max_block_elements: int = MAX_BLOCK_ELEMENTS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (cosines [q, k'], universe indices [q, k']) of each query row's k largest cosines with the
    rows of `universe`, largest first, k' = min(k, n - 1 if `exclude` else n).

    `queries` [q, d] and `universe` [n, d] need not be normalised. `exclude` [q] (long) names, per query,
    one universe row it must not return (itself). The similarities are computed in blocks of query rows
    (`rows x n <= max_block_elements`), each reduced to its top k before the next: memory is one block,
    never q x n.
    """
    n = universe.shape[0]
    unit = unit_rows(universe)
    keep = min(k, n - 1 if exclude is not None else n)
    rows = max(1, min(queries.shape[0], max_block_elements // max(n, 1)))
    values, indices = [], []
    for start in range(0, queries.shape[0], rows):
        block = unit_rows(queries[start : start + rows]) @ unit.T  # (rows, n)
        if exclude is not None:
            block.scatter_(1, exclude[start : start + rows].unsqueeze(1).to(block.device), float("-inf"))
        top = block.topk(keep, dim=1)
        values.append(top.values)
        indices.append(top.indices)
    if not values:
        empty = queries.new_zeros((0, keep))
        return empty.float(), empty.long()
    return torch.cat(values), torch.cat(indices)


def cosine_neighbours(
    feature_ids: Sequence[str],
    universe_ids: Sequence[str],
    universe_hooks: Sequence[str],
    vectors: torch.Tensor,
    k: int,
    scope: CosineScope = "hook",
    max_block_elements: int = MAX_BLOCK_ELEMENTS,
) -> list[Neighbour]:
    """Returns the `k` nearest features by write-direction cosine of each of `feature_ids` (the run's), among
    the universe (`universe_ids`, `universe_hooks`, its write `vectors` [n, d], one row per id), rank 1 first.

    A feature id not in the universe is skipped. With `scope = "hook"`, a feature's neighbours share its hook.
    """
    position = {fid: i for i, fid in enumerate(universe_ids)}
    in_run = set(feature_ids)
    groups: dict[str, list[int]] = {}
    for i, hook in enumerate(universe_hooks):
        groups.setdefault(hook if scope == "hook" else "", []).append(i)
    asked: dict[str, list[int]] = {}  # group -> the universe rows of the run's features in it
    for fid in feature_ids:
        if fid in position:
            row = position[fid]
            asked.setdefault(universe_hooks[row] if scope == "hook" else "", []).append(row)
    out: list[Neighbour] = []
    for group, queries in asked.items():
        members = groups[group]
        local = {u: j for j, u in enumerate(members)}
        member_index = torch.tensor(members, dtype=torch.long, device=vectors.device)
        group_vectors = vectors.index_select(0, member_index) if len(members) < vectors.shape[0] else vectors
        query_local = torch.tensor([local[q] for q in queries], dtype=torch.long, device=vectors.device)
        values, picked = blocked_cosine_topk(
            group_vectors.index_select(0, query_local), group_vectors, k, query_local, max_block_elements
        )
        names = [universe_ids[m] for m in members]
        member_in_run = [name in in_run for name in names]
        for q, row_values, row_picked in zip(queries, values.tolist(), picked.tolist(), strict=True):
            feature = universe_ids[q]
            out.extend(
                Neighbour(feature, names[j], "cosine", value, rank, None, member_in_run[j])
                for rank, (value, j) in enumerate(zip(row_values, row_picked, strict=True), start=1)
            )
    return out
