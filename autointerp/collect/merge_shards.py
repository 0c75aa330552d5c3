"""Exact merge of collection shards: sampler states of disjoint parts of one corpus -> one state.

Each shard streams its windows (with their global window numbers) through an `ExemplarSampler`
and saves `state_dict()`. What a sampler keeps is a function of the set of windows it saw (see
`autointerp.collect.sampler`), so the merge is a selection over the union of the kept items:
- top-k: the k largest window maxima, equal maxima by window number;
- the random bins: every kept random item re-binned against the merged max (quiet, or its octave
  below the max's power-of-two top), the smallest keys per bin;
- the quantile bins: every kept quantile item re-binned against the merged max (whose power-of-two
  top is at least each shard's, so each shard bin lies inside one merged bin), the smallest keys
  per bin;
- max, sums, token histograms (whose bins are fixed, so density is read off the merged counts),
  window-max histograms and token counts add up (max: the max).

The result equals the state of one process over the whole corpus, item for item (pool rows aside,
which `exemplars()` resolves); `tests/collect/test_merge_shards.py` checks it. One caveat on the mean:
activation sums are float64 totals of each batch's float32 sum. Shards cover whole batches, so each
batch sum is the one a single process computes, but the shards' totals are added in another
grouping; that is exact while the float64 total holds every bit of the batch sums (batch sums
within ~2^29 of each other in magnitude), which the tests and typical activations meet.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from autointerp.collect.keys import RANDOM_BINS, bin_sort_key, random_bin
from autointerp.collect.results import SamplingPlan
from autointerp.collect.sampler import ExemplarSampler
from autointerp.corpus.sources import Window
from autointerp.errors import AutointerpError
from autointerp.neighbours.cooccurrence import CooccurrenceLog


class ShardMergeError(AutointerpError):
    """Shard states that cannot be merged (another plan, overlapping windows)."""


def _sampler_from_state(state: dict[str, Any], window_tokens: int, plan: SamplingPlan) -> ExemplarSampler:
    sampler = ExemplarSampler(state["value"].shape[0], window_tokens, plan, torch.device("cpu"))
    sampler.load_state_dict(state)
    return sampler


def _select(sort_key: torch.Tensor, window: torch.Tensor, take: int) -> torch.Tensor:
    """Returns, per row, the columns of the `take` smallest (sort key, window number) pairs."""
    by_window = window.argsort(dim=1, stable=True)
    order = sort_key.gather(1, by_window).argsort(dim=1, stable=True)
    return by_window.gather(1, order)[:, :take]


def merge_states(states: Sequence[dict[str, Any]], window_tokens: int, plan: SamplingPlan) -> ExemplarSampler:
    """Returns a CPU sampler holding the merge of shard `states` (from `ExemplarSampler.state_dict`)."""
    if not states:
        raise ShardMergeError("no shard states to merge")
    parts = [_sampler_from_state(s, window_tokens, plan) for s in states]
    merged = ExemplarSampler(parts[0].n_features, window_tokens, plan, torch.device("cpu"))
    k, random_windows, bins, per_bin = plan.top_k, plan.random_windows, plan.kept_bins, plan.per_quantile
    for part in parts:
        if part.n_features != merged.n_features or part.value.shape != merged.value.shape:
            raise ShardMergeError("shard states have different shapes: were they collected with one config?")
    seen = [set(p.windows) for p in parts]
    if any(a & b for i, a in enumerate(seen) for b in seen[i + 1 :]):
        raise ShardMergeError("two shards kept the same window: their window ranges overlap")

    merged.act_max = torch.stack([p.act_max for p in parts]).amax(dim=0)
    merged.act_sum = sum((p.act_sum for p in parts[1:]), parts[0].act_sum.clone())
    merged.token_histogram = torch.stack([p.token_histogram for p in parts]).sum(dim=0)
    merged.histogram = torch.stack([p.histogram for p in parts]).sum(dim=0)
    merged.tokens = sum(p.tokens for p in parts)
    merged.batches = sum(p.batches for p in parts)
    merged.windows_seen = max(p.windows_seen for p in parts)

    def gather(section: slice) -> tuple[torch.Tensor, ...]:
        value = torch.cat([p.value[:, section] for p in parts], dim=1)
        key = torch.cat([p.key[:, section] for p in parts], dim=1)
        window = torch.cat([p.window[:, section] for p in parts], dim=1)
        acts = torch.cat(
            [p.pool.gather(1, p.row[:, section].unsqueeze(-1).expand(-1, -1, window_tokens)) for p in parts], dim=1
        )
        return value, key, window, acts

    chosen: list[tuple[torch.Tensor, ...]] = []  # (value, key, window, acts) per section, in slot order

    def keep(
        columns: torch.Tensor, value: torch.Tensor, key: torch.Tensor, window: torch.Tensor, acts: torch.Tensor
    ) -> None:
        taken_window = window.gather(1, columns)
        real = taken_window >= 0
        chosen.append(
            (
                torch.where(real, value.gather(1, columns), float("-inf")),
                torch.where(real, key.gather(1, columns), 1.0),
                taken_window,
                acts.gather(1, columns.unsqueeze(-1).expand(-1, -1, window_tokens)),
            )
        )

    value, key, window, acts = gather(slice(0, k))
    keep(_select(torch.where(window >= 0, -value.double(), float("inf")), window, k), value, key, window, acts)

    def keep_bins(section: slice, bin_of: Callable[[torch.Tensor], torch.Tensor], bins: range, per_bin: int) -> None:
        """Keeps, for each bin in `bins` (in slot order), the `per_bin` smallest keys of the items in it."""
        value, key, window, acts = gather(section)
        # an empty slot: point at an extra empty column (window -1) so `keep` writes a hole
        hole = torch.full_like(value[:, :1], float("nan"))
        value_h = torch.cat([value, hole], dim=1)
        key_h = torch.cat([key, torch.ones_like(hole)], dim=1)
        window_h = torch.cat([window, torch.full_like(window[:, :1], -1)], dim=1)
        acts_h = torch.cat([acts, torch.zeros_like(acts[:, :1])], dim=1)
        item_bin = bin_of(value)
        for j in bins:
            in_bin = (window >= 0) & (item_bin == j)
            sort_key = torch.where(in_bin, bin_sort_key(j, key), float("inf"))
            columns = _select(sort_key, torch.where(in_bin, window, -1), per_bin)
            columns = torch.where(in_bin.gather(1, columns), columns, -1)
            keep(torch.where(columns < 0, value.shape[1], columns), value_h, key_h, window_h, acts_h)

    random_end = k + plan.random_slots
    if random_windows:
        keep_bins(slice(k, random_end), lambda v: random_bin(v, merged.act_max), range(RANDOM_BINS), random_windows)
    if bins:
        quantile_bins = range(RANDOM_BINS, RANDOM_BINS + bins)
        keep_bins(slice(random_end, None), lambda v: merged._quantile_bin(v, merged.act_max), quantile_bins, per_bin)
    merged.value = torch.cat([c[0] for c in chosen], dim=1).contiguous()
    merged.key = torch.cat([c[1] for c in chosen], dim=1).contiguous()
    merged.window = torch.cat([c[2] for c in chosen], dim=1).contiguous()
    merged.pool = torch.cat([c[3] for c in chosen], dim=1).contiguous()
    merged.row = torch.arange(merged.pool.shape[1]).repeat(merged.n_features, 1)
    windows: dict[int, Window] = {}
    for part in parts:
        windows.update(part.windows)
    merged.windows = windows
    merged.prune_windows()
    if all("cooccurrence" in s for s in states):  # neighbours hook: the logs of disjoint windows concatenate
        merged.cooccurrence = CooccurrenceLog.merged([s["cooccurrence"] for s in states])
    return merged
