"""Observe: stream the corpus through a feature source and keep, per feature, what sampling needs.

Per feature, as in Bills et al. (2023) and Paulo et al. (2024):
- `top`: the k windows with the largest maximum activation;
- `quantile-j`: up to `per_quantile` windows sampled uniformly from each of `quantiles` equal-width
  bins of the window max, bin j holding windows whose max is in ((j-1)/Q, j/Q] x the feature's max
  (sampled from kept bins that are exact under any split of the corpus; see `quantile_bin_top`);
- `random` (non-activating): up to `random_windows` windows where the feature does not fire (every
  token below 10 % of the final max), sampled by random key among them; a feature with fewer such
  windows kept gets fewer (never a firing window in their place; for a dense feature, see below);
- statistics: max, mean, a histogram of window maxima over fixed log2 bins (`HISTOGRAM_EDGES`), and
  density: the share of tokens that fire (of the tokens read: a window's first `skipped_tokens` are
  not, see `features.skip_first_tokens`), i.e. whose activation is at least 10 % of the feature's
  max (`autointerp.activations.FIRES_FRACTION`, the one definition scoring and the review app use).
  The max is known only at the end, so every token is counted into a per-feature histogram of fixed
  bins (`autointerp.collect.histogram`: 8 bins per octave) and density is read off it at the end,
  interpolating inside the bin that holds the threshold: it lies between the exact shares at 8/9
  and 9/8 of the threshold. The counts add, so shards merge exactly.

Everything is kept in fixed-size tensors on the model's device, so memory is
features x ((k + 6 x random + 4 x quantiles x per_quantile) x window length + TOKEN_BINS (387) counts),
whatever the corpus length.

How a window is ranked: one reduction per window and feature (its max), then a top-k over the
kept windows plus the batch's (equal maxima: the lower window number first). The reservoirs use
bottom-r random keys: every (window, feature) gets a uniform key that is a hash of (seed, feature,
window number) only (`random_keys`); each bin keeps the items with the smallest keys (equal keys:
the lower window number), which is a uniform sample of the windows that went into that bin. The
quantile bins kept are 4Q equal-width bins of (0, T], T the feature's max rounded up to a power of
two: T changes only when the max doubles, and then pairs of bins merge, so what is kept is a
function of the set of windows seen, whatever their order or split: a corpus collected in shards
and merged (`autointerp.collect.merge_shards`) keeps exactly the items of one pass over it. The
reported bin j of the final max takes the kept items whose max falls in it and that are not top
windows, smallest keys first; top and quantile windows that do not fire at the final max are dropped.
A reported bin can still come back short of windows the corpus holds: the lowest kept bin straddles the
firing threshold (its items may all be quiet), and a kept bin's few items may all be top windows.

Non-activating windows need the final max, which a stream does not know; the running max only
grows, so what is quiet now stays quiet. The random reservoir keeps `random_windows` items in each
of `RANDOM_BINS` bins of the window max relative to T: bin 0 holds windows at or below T/32 (quiet
under any final max, since the final max exceeds T/2), bins 1..5 the octaves (T/32, T/16], ...,
(T/2, T]. When T doubles the octaves shift down one bin and the lowest joins bin 0, so, like the
quantile bins, what is kept depends only on the set of windows seen. At the end the windows below
10 % of the final max (bin 0 and parts of bins 1-2) are candidates and the `random_windows` with the
smallest keys are reported: every one is a window where the feature does not fire. Not every quiet
window had its chance, though: in bins 1-2 quiet windows compete with firing ones for the bin's slots,
so a dense feature (most windows fire) can report fewer quiet windows than the corpus holds (4 neurons
of layer 15 over 256 windows: one reported 3 of its 4, another 0 of its 2); the collect stage then passes
over the corpus again for such features (`autointerp.collect.quiet_pass`).

Per-token activations are written only for newly kept items (into a per-feature pool of rows
that kept items point to). The per-token passes (window max, sum, token histogram) read each
chunk of the batch once (one chunk per hooked layer; no concatenated [batch, tokens, features]
tensor). The merge itself has two implementations that keep the same items in the same order
(a test runs both): on the CPU, `merge_cpu.merge_batch`, a compiled loop that visits each feature
once and inserts a window only where it beats the worst kept item; elsewhere (GPU), tensor
operations over the features a batch can change (`_rows_to_merge`), a few thousand at a time.
The compiled merge hashes each random key itself, only for the windows it compares (the same bits as
`random_keys`), and marks the pool rows of new items in a kept int32 table that `copy_pending` empties
as it copies their activations: no per-batch key or index tensors. The token histogram counts bins
wholly below 10 % of the running max in bin 0 (`collect.histogram.cutoff_bins`), which keeps its
scattered writes near each feature's top without changing any density.

Checkpoints: the whole state (tensors, counters and the token ids of windows still referenced)
is saved atomically every `checkpoint_every` batches; a run that finds a checkpoint with the same
fingerprint skips the windows it already saw and continues (a checkpoint without the token
histogram, from an older autointerp, is ignored and collection starts over). Random keys depend only on the window
number, so a resumed run keeps exactly the exemplars of an uninterrupted one.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch

from autointerp.activations import fires_threshold
from autointerp.collect.histogram import TOKEN_BINS, add_to_histogram, cutoff_bins, densities
from autointerp.collect.keys import EMPTY_KEY, RANDOM_BINS, bin_sort_key, quantile_bin_top, random_bin, random_keys
from autointerp.collect.merge_batch_cpu import copy_pending, merge_on_cpu, window_stats
from autointerp.collect.results import (
    HISTOGRAM_EDGES,
    CheckpointError,
    Exemplar,
    FeatureStats,
    SamplingPlan,
    check_finite,
    distinct_windows,
    renumber,
)
from autointerp.corpus.sources import Window
from autointerp.neighbours.cooccurrence import CooccurrenceLog


class ExemplarSampler:
    """The streaming state: kept windows per feature, their activations, and statistics."""

    def __init__(
        self, n_features: int, window_tokens: int, plan: SamplingPlan, device: torch.device, skipped_tokens: int = 0
    ) -> None:
        """`skipped_tokens`: leading tokens of each window that the source does not read (`SkipFirstTokens`
        gives them as 0); they are left out of the token count, so of the mean and density."""
        self.plan, self.device = plan, device
        self.n_features, self.window_tokens = n_features, window_tokens
        self.skipped_tokens = skipped_tokens
        k, slots = plan.top_k, plan.top_k + plan.reservoir_slots
        f = n_features
        self.value = torch.full((f, slots), float("-inf"), device=device)  # window max of each kept item
        self.key = torch.ones((f, slots), device=device)  # its random key (reservoir slots)
        self.window = torch.full((f, slots), -1, dtype=torch.long, device=device)  # global window number
        self.row = torch.arange(slots, device=device).repeat(f, 1)  # its row in `pool`
        self.pool = torch.zeros((f, slots, window_tokens), device=device)  # per-token activations
        self.act_sum = torch.zeros(f, dtype=torch.float64, device=device)
        self.act_max = torch.full((f,), float("-inf"), device=device)
        self.token_histogram = torch.zeros((f, TOKEN_BINS), dtype=torch.long, device=device)  # every token's bin
        self.histogram = torch.zeros((f, len(HISTOGRAM_EDGES) + 2), dtype=torch.long, device=device)
        self.edges = torch.tensor(HISTOGRAM_EDGES, device=device)
        self.tokens = 0
        self.batches = 0
        self.windows_seen = 0
        self.windows: dict[int, Window] = {}  # token ids of windows that kept items may point to
        # reservoir layout: random bins 0..RANDOM_BINS - 1 (`random_windows` slots each), then the kept
        # quantile bins RANDOM_BINS.. (`per_quantile` slots each)
        caps = [plan.random_windows] * RANDOM_BINS + [plan.per_quantile] * plan.kept_bins
        self.bin_caps = torch.tensor(caps, dtype=torch.long, device=device)
        self.bin_offsets = torch.tensor([0, *itertools.accumulate(caps)][:-1], dtype=torch.long, device=device)
        self.slot_bin = torch.repeat_interleave(torch.arange(len(caps), device=device), self.bin_caps)
        self._k = k
        self.merge_rows = 4096
        self.compiled = device.type == "cpu"  # merge_cpu's loop; the tensor merge on other devices
        self._plan_sizes = (k, plan.random_windows, plan.kept_bins, plan.per_quantile)
        self.gate = True  # merge only the features a batch can change (False: all, for tests)
        self.feature_names: Sequence[str] = [f"#{i}" for i in range(n_features)]
        """Names used in the error about a non-finite activation."""
        self._pending: torch.Tensor | None = None  # the compiled merge's new items (`_pending_rows`)
        self.cooccurrence: CooccurrenceLog | None = None
        """Neighbours hook: the log of windows that may fire, for co-occurrence neighbours (None: off)."""

    # one batch ----------------------------------------------------------------------------------

    def _keys(self, first: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the random and quantile keys [features, batch] of windows first..first + batch - 1."""
        return tuple(  # type: ignore[return-value]
            random_keys(self.plan.seed, stream, self.n_features, first, batch, self.device) for stream in (0, 1)
        )

    def _quantile_bin(self, value: torch.Tensor, feature_max: torch.Tensor) -> torch.Tensor:
        """Returns the layout bins (RANDOM_BINS + 0..4Q - 1) of window maxima in the kept quantile bins,
        equal-width bins of (0, `quantile_bin_top`] of each feature's max."""
        q = self.plan.kept_bins
        ratio = value / quantile_bin_top(feature_max).unsqueeze(1)
        return (torch.ceil(ratio * q).long() - 1).clamp(0, q - 1) + RANDOM_BINS

    def _reservoir_bin(self, value: torch.Tensor, feature_max: torch.Tensor) -> torch.Tensor:
        """Returns the layout bin, under the current max, of the items kept in each reservoir slot."""
        slot_bin = self.slot_bin.unsqueeze(0).expand_as(value)
        rebinned = random_bin(value, feature_max)
        if self.plan.kept_bins:
            rebinned = torch.where(slot_bin < RANDOM_BINS, rebinned, self._quantile_bin(value, feature_max))
        return rebinned

    def update(self, acts: torch.Tensor | Sequence[torch.Tensor], windows: list[Window]) -> None:
        """Merges one batch of `windows`: acts [batch, tokens, features], or chunks of it split on features.

        Chunks (one per hooked layer, say) save concatenating a [batch, tokens, features] tensor;
        their last dimensions add up to the sampler's features, in order.
        """
        chunks = [acts] if isinstance(acts, torch.Tensor) else list(acts)
        batch, tokens = chunks[0].shape[:2]
        first = self.windows_seen
        if self.compiled and all(c.dtype == torch.float32 for c in chunks):
            window_max = self._window_stats_on_cpu(chunks)
        else:
            window_max = self._window_stats(chunks)
        # the running sums turn NaN / inf as soon as one activation is: one small check per batch,
        # before anything non-finite reaches the merge
        if not bool(torch.isfinite(self.act_sum).all()):
            check_finite(chunks, windows, self.feature_names)
        old_top = quantile_bin_top(self.act_max)
        self.act_max = torch.maximum(self.act_max, window_max.amax(dim=1))
        # the bins of kept items move only when the max's power-of-two top rises (`quantile_bin_top`)
        rebin = quantile_bin_top(self.act_max) > old_top
        if self.cooccurrence is not None:  # neighbours hook (`autointerp.neighbours.cooccurrence`)
            self.cooccurrence.add(window_max, self.act_max, first)
        if self.compiled:
            names = ("value", "key", "window", "row", "act_max", "histogram", "edges")
            state = {name: getattr(self, name) for name in names}
            state["pending"] = self._pending_rows()
            merge_on_cpu(state, window_max, rebin, self._plan_sizes, self.plan.seed, first)
            self._copy_new_activations(chunks)
        else:
            random_key, quantile_key = self._keys(first, batch)
            positive = window_max > 0
            bins = torch.where(positive, torch.bucketize(window_max, self.edges) + 1, 0)
            self.histogram.scatter_add_(1, bins, torch.ones_like(bins))
            self._merge_rows(window_max, positive, random_key, quantile_key, rebin, chunks, first)

        skipped = min(self.skipped_tokens, tokens)
        if skipped:  # their zeros went to bin 0 of the token histogram: take them out again
            self.token_histogram[:, 0] -= batch * skipped
        for offset, window in enumerate(windows):
            self.windows[first + offset] = window
        self.windows_seen += batch
        self.tokens += batch * (tokens - skipped)
        self.batches += 1
        if self.batches % 16 == 0:
            self.prune_windows()

    def _window_stats(self, chunks: list[torch.Tensor]) -> torch.Tensor:
        """Adds the batch to sums and token histograms; returns window maxima [features, batch] (chunk by chunk)."""
        self.act_sum += torch.cat([c.sum(dim=(0, 1), dtype=torch.float32) for c in chunks]).double()
        offset, cutoff = 0, cutoff_bins(self.act_max)
        for chunk in chunks:
            add_to_histogram(self.token_histogram, chunk, offset, cutoff[offset : offset + chunk.shape[2]])
            offset += chunk.shape[2]
        return torch.cat([c.amax(dim=1) for c in chunks], dim=1).T.float().contiguous()

    def _window_stats_on_cpu(self, chunks: list[torch.Tensor]) -> torch.Tensor:
        """`_window_stats` in one compiled read of each float32 chunk."""
        window_max = torch.empty((self.n_features, chunks[0].shape[0]))
        offset, cutoff = 0, cutoff_bins(self.act_max).numpy()
        for chunk in chunks:
            values = chunk.contiguous().numpy()
            sums, histogram = self.act_sum.numpy(), self.token_histogram.numpy()
            window_stats(values, values.view("int32"), window_max.numpy(), sums, histogram, cutoff, offset)
            offset += chunk.shape[2]
        return window_max

    def _pending_rows(self) -> torch.Tensor:
        """Returns the compiled merge's [features, slots] int32 table of new items' batch rows (-1: none),
        kept between batches (every entry is -1 again once the batch's activations are copied)."""
        if self._pending is None:
            self._pending = torch.full(self.row.shape, -1, dtype=torch.int32)
        return self._pending

    def _copy_new_activations(self, chunks: list[torch.Tensor]) -> None:
        """Copies the activations of the items the compiled merge kept into their pool rows."""
        pending = self._pending_rows()
        if all(c.dtype == torch.float32 for c in chunks):
            pool, rows, offset = self.pool.numpy(), pending.numpy(), 0
            for chunk in chunks:
                copy_pending(pool, rows, chunk.contiguous().numpy(), offset)
                offset += chunk.shape[2]
            return
        feature, pool_row = (pending >= 0).nonzero(as_tuple=True)
        batch_row = pending[feature, pool_row].long()
        pending[feature, pool_row] = -1
        self._store_activations(chunks, feature, pool_row, batch_row)

    def _merge_rows(
        self,
        window_max: torch.Tensor,
        positive: torch.Tensor,
        random_key: torch.Tensor,
        quantile_key: torch.Tensor,
        rebin: torch.Tensor,
        chunks: list[torch.Tensor],
        first: int,
    ) -> None:
        """The tensor merge: every feature the batch can change, a few thousand at a time."""
        rows = self._rows_to_merge(window_max, positive, random_key, quantile_key, rebin)
        new_features, new_slots, new_batch_rows = [], [], []
        # parts keep the merge's temporaries in cache
        for part in self._row_parts(rows):
            local, slot, batch_row = self._merge(
                part, window_max[part], positive[part], random_key[part], quantile_key[part], first
            )
            new_features.append(local + part.start if isinstance(part, slice) else part[local])
            new_slots.append(slot)
            new_batch_rows.append(batch_row)
        feature, slot = torch.cat(new_features), torch.cat(new_slots)
        self._store_activations(chunks, feature, self.row[feature, slot], torch.cat(new_batch_rows))

    def _rows_to_merge(
        self,
        window_max: torch.Tensor,
        positive: torch.Tensor,
        random_key: torch.Tensor,
        quantile_key: torch.Tensor,
        rebin: torch.Tensor,
    ) -> torch.Tensor | None:
        """Returns the features whose kept items this batch can change (None: all of them).

        A batch window changes nothing unless it beats the k-th top value or the worst sort key
        of the reservoir bin it would enter; a feature whose max's power-of-two top rose (`rebin`) is
        re-binned. Skipping the others gives exactly the state a full merge would; late in a long corpus
        few features need one, which is what keeps collection near the speed of the bare forward pass.
        """
        if not self.gate:
            return None
        k = self._k
        need = rebin | (window_max > self.value[:, k - 1 : k]).any(dim=1)
        if self.plan.reservoir_slots:
            # a feature whose max's power-of-two top did not rise keeps its items in their bins: no re-binning
            old_sort = self._old_sort(self.slot_bin.unsqueeze(0).expand_as(self.key[:, k:]))
            worst = torch.zeros((self.n_features, len(self.bin_caps)), dtype=torch.float64, device=self.device)
            worst.scatter_reduce_(1, self.slot_bin.expand_as(old_sort), old_sort, "amax", include_self=False)
            if self.plan.random_windows:
                batch_bin = random_bin(window_max, self.act_max)
                need |= (bin_sort_key(batch_bin, random_key) < worst.gather(1, batch_bin)).any(dim=1)
            if self.plan.kept_bins:
                batch_bin = self._quantile_bin(window_max, self.act_max)
                batch_sort = bin_sort_key(batch_bin, quantile_key)
                need |= (positive & (batch_sort < worst.gather(1, batch_bin))).any(dim=1)
        if bool(need.all()):
            return None
        return need.nonzero().squeeze(1)

    def _row_parts(self, rows: torch.Tensor | None) -> list[torch.Tensor] | list[slice]:
        """Returns `rows` (None: every feature) in parts of at most `merge_rows` features."""
        size = self.merge_rows
        if rows is None:
            return [slice(start, min(start + size, self.n_features)) for start in range(0, self.n_features, size)]
        return list(rows.split(size))

    def _old_sort(self, old_bin: torch.Tensor, rows: torch.Tensor | slice = slice(None)) -> torch.Tensor:
        """Returns the sort keys (bin + offset in [0, 1), float64) of the kept reservoir items of `rows`."""
        k = self._k
        old_real = self.window[rows, k:] >= 0
        return old_bin + torch.where(old_real, bin_sort_key(0, self.key[rows, k:]), EMPTY_KEY)

    def _merge(
        self,
        rows: torch.Tensor | slice,
        window_max: torch.Tensor,
        positive: torch.Tensor,
        random_key: torch.Tensor,
        quantile_key: torch.Tensor,
        first: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Merges the batch into the kept items of `rows`; returns (row in `rows`, slot, batch row) of new items."""
        k, batch = self._k, window_max.shape[1]
        # kept items come first and are in order, batch windows after them in window order: a stable
        # sort orders equal maxima by window number, as the CPU merge and shard merges do
        top_values, top_pick = torch.cat([self.value[rows, :k], window_max], dim=1).sort(
            dim=1, descending=True, stable=True
        )
        top_values, top_pick = top_values[:, :k], top_pick[:, :k]
        src_old = [torch.where(top_pick < k, top_pick, -1)]
        src_batch = [torch.where(top_pick >= k, top_pick - k, -1)]
        new_value, new_key = [top_values], [torch.ones_like(top_values)]
        if self.plan.reservoir_slots:
            res_old, res_batch, res_value, res_key = self._merge_reservoirs(
                rows, window_max, positive, random_key, quantile_key, first
            )
            src_old.append(res_old)
            src_batch.append(res_batch)
            new_value.append(res_value)
            new_key.append(res_key)
        old = torch.cat(src_old, dim=1)
        from_batch = torch.cat(src_batch, dim=1)
        kept = old >= 0
        batch_window = torch.arange(first, first + batch, device=self.device)
        self.window[rows] = torch.where(
            kept,
            self.window[rows].gather(1, old.clamp(min=0)),
            torch.where(from_batch >= 0, batch_window[from_batch.clamp(min=0)], -1),
        )
        self.value[rows], self.key[rows] = torch.cat(new_value, dim=1), torch.cat(new_key, dim=1)
        self.row[rows] = self._assigned_rows(self.row[rows], old, kept)
        local, slot = (from_batch >= 0).nonzero(as_tuple=True)
        return local, slot, from_batch[local, slot]

    def _merge_reservoirs(
        self,
        rows: torch.Tensor | slice,
        window_max: torch.Tensor,
        positive: torch.Tensor,
        random_key: torch.Tensor,
        quantile_key: torch.Tensor,
        first: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (old slot or -1, batch row or -1, value, key) for each reservoir slot of `rows`."""
        k, (n_rows, batch) = self._k, window_max.shape
        slots = self.plan.reservoir_slots
        old_value, old_key = self.value[rows, k:], self.key[rows, k:]
        slot_bin = self.slot_bin.unsqueeze(0).expand_as(old_value)
        # kept items move to the bin of the current max (a no-op where its power-of-two top did not rise)
        old_real = self.window[rows, k:] >= 0
        old_bin = torch.where(old_real, self._reservoir_bin(old_value, self.act_max[rows]), slot_bin)
        parts = [self._old_sort(old_bin, rows), bin_sort_key(random_bin(window_max, self.act_max[rows]), random_key)]
        batch_window = torch.arange(first, first + batch, device=self.device).expand(n_rows, batch)
        windows = [self.window[rows, k:], batch_window]
        if self.plan.kept_bins:
            batch_bin = self._quantile_bin(window_max, self.act_max[rows])
            parts.append(torch.where(positive, bin_sort_key(batch_bin, quantile_key), float("inf")))
            windows.append(batch_window)
        # order by sort key, equal keys by window number (as merge_cpu and shard merges do)
        by_window = torch.cat(windows, dim=1).argsort(dim=1, stable=True)
        sort_key, order = torch.cat(parts, dim=1).gather(1, by_window).sort(dim=1, stable=True)
        order = by_window.gather(1, order)
        sorted_bin = torch.floor(sort_key)
        rank = torch.arange(sort_key.shape[1], device=self.device) - torch.searchsorted(sort_key, sorted_bin)
        bin_index = sorted_bin.clamp(0, len(self.bin_caps) - 1).nan_to_num(0).long()
        chosen = torch.isfinite(sort_key) & (rank < self.bin_caps[bin_index])
        slot = torch.where(chosen, self.bin_offsets[bin_index] + rank, slots)
        source = torch.full((n_rows, slots + 1), -1, dtype=torch.long, device=self.device)
        source.scatter_(1, slot, torch.where(chosen, order, -1))
        source = source[:, :slots]  # candidate number, or -1 for a slot left empty
        hole = source < 0
        is_old = (source >= 0) & (source < slots)
        batch_row = torch.where(source >= slots, (source - slots) % batch, -1)
        batch_is_quantile = source >= slots + batch
        cand = source.clamp(min=0)
        value = torch.where(
            is_old,
            old_value.gather(1, cand.clamp(max=slots - 1)),
            window_max.gather(1, batch_row.clamp(min=0)),
        )
        key = torch.where(
            is_old,
            old_key.gather(1, cand.clamp(max=slots - 1)),
            torch.where(
                batch_is_quantile,
                quantile_key.gather(1, batch_row.clamp(min=0)),
                random_key.gather(1, batch_row.clamp(min=0)),
            ),
        )
        value = torch.where(hole, float("-inf"), value)
        key = torch.where(hole, 1.0, key)
        old_slot = torch.where(is_old, cand + k, -1)
        return old_slot, batch_row, value, key

    def _assigned_rows(self, rows: torch.Tensor, old: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        """Returns pool rows: kept items keep theirs; new items and empty slots take the rows freed."""
        slots = rows.shape[1]
        kept_rows = rows.gather(1, old.clamp(min=0))
        referenced = torch.zeros((rows.shape[0], slots + 1), dtype=torch.uint8, device=self.device)
        referenced.scatter_(1, torch.where(kept, kept_rows, slots), 1)
        free_rows = referenced[:, :slots].argsort(dim=1, stable=True)  # unreferenced rows first
        need_rank = ((~kept).long().cumsum(dim=1) - 1).clamp(min=0)
        return torch.where(kept, kept_rows, free_rows.gather(1, need_rank))

    def _store_activations(
        self, chunks: list[torch.Tensor], feature: torch.Tensor, pool_row: torch.Tensor, batch_row: torch.Tensor
    ) -> None:
        """Copies the per-token activations of new items (sorted by feature) into their pool rows."""
        chunk_ends = list(itertools.accumulate(c.shape[2] for c in chunks))
        item_ends = torch.searchsorted(feature, torch.tensor(chunk_ends, device=self.device)).tolist()
        first_item, first_feature = 0, 0
        for chunk, item_end, chunk_end in zip(chunks, item_ends, chunk_ends, strict=True):
            if item_end > first_item:
                f = feature[first_item:item_end]
                rows = pool_row[first_item:item_end]
                self.pool[f, rows] = chunk[batch_row[first_item:item_end], :, f - first_feature].float()
            first_item, first_feature = item_end, chunk_end

    def prune_windows(self) -> None:
        """Forgets the token ids of windows no kept item points to."""
        if not self.windows:
            return
        # a count per window number from the lowest held (count 0: empty slots and anything lower), which is
        # cheaper than the sort of torch.unique over every kept item
        held = torch.tensor(list(self.windows), dtype=torch.long, device=self.device)
        # count 0: empty slots and lower numbers; the last count: higher ones (neither is a held window)
        lowest, span = int(held.min()), int(held.max()) - int(held.min()) + 3
        counts = torch.bincount((self.window.flatten() - lowest + 1).clamp(0, span - 1), minlength=span)
        kept = (counts[held - lowest + 1] > 0).tolist()
        self.windows = {n: w for (n, w), keep in zip(self.windows.items(), kept, strict=True) if keep}

    # results --------------------------------------------------------------------------------------

    def stats(self) -> list[FeatureStats]:
        """Returns every feature's statistics so far."""
        tokens = max(self.tokens, 1)
        maxima, sums = self.act_max.tolist(), self.act_sum.tolist()
        density = densities(self.token_histogram, self.act_max).tolist()
        histograms = self.histogram.tolist()
        return [
            FeatureStats(maxima[f], sums[f] / tokens, density[f], self.tokens, histograms[f])
            for f in range(self.n_features)
        ]

    def exemplars(self, stats: list[FeatureStats]) -> list[Exemplar]:
        """Returns the kept windows of every live feature, labelled with kind, rank and split.

        Top and quantile windows fire at the final max, random ones do not (see `autointerp.activations`);
        a feature with too few of either gets fewer, never a window of the other kind in their place."""
        k, plan = self._k, self.plan
        windows, values = self.window.tolist(), self.value.tolist()
        keys = self.key.tolist()
        thresholds = [fires_threshold(m) for m in self.act_max.tolist()]  # value >= threshold: `fires`
        first_quantile = k + plan.random_slots
        quantile_bins = self._reported_bins()
        result = []
        slot_of: dict[int, int] = {}  # id(exemplar) -> its slot; activations are read once the kept ones are known
        for f in range(self.n_features):
            if stats[f].dead:
                continue

            def kept(slots: range, f: int = f) -> list[int]:
                return [slot for slot in slots if windows[f][slot] >= 0]

            def item(kind: str, rank: int, slot: int, split: str, f: int = f) -> Exemplar:
                exemplar = Exemplar(f, kind, rank, self.windows[windows[f][slot]], [], split)
                slot_of[id(exemplar)] = slot
                return exemplar

            fire, value = thresholds[f], values[f]
            top = [slot for slot in kept(range(k)) if value[slot] >= fire]
            for rank, slot in enumerate(top):
                result.append(item("top", rank, slot, "explain" if rank % 2 == 0 else "score"))
            # non-activating: the quiet candidates of the random bins, smallest keys first (ties: window number)
            quiet = [slot for slot in kept(range(k, first_quantile)) if not value[slot] >= fire]
            quiet.sort(key=lambda slot: (keys[f][slot], windows[f][slot]))
            for rank, slot in enumerate(quiet[: plan.random_windows]):
                result.append(item("random", rank, slot, "score"))
            # each bin of the final max: its kept firing items with the smallest keys (equal keys: window number),
            # leaving out the top windows, which would be dropped as repeats with nothing in their place
            by_bin: dict[int, list[tuple[float, int, int]]] = {}
            top_windows = {windows[f][slot] for slot in top}
            for slot in kept(range(first_quantile, len(windows[f]))):
                if value[slot] >= fire and windows[f][slot] not in top_windows:
                    by_bin.setdefault(quantile_bins[f][slot], []).append((keys[f][slot], windows[f][slot], slot))
            for j in sorted(by_bin):
                for rank, (_, _, slot) in enumerate(sorted(by_bin[j])[: plan.per_quantile]):
                    result.append(item(f"quantile-{j}", rank, slot, "explain" if rank % 2 == 0 else "score"))
        chosen = renumber(distinct_windows(result))
        self._read_activations(chosen, [slot_of[id(e)] for e in chosen])
        return chosen

    def _read_activations(self, exemplars: list[Exemplar], slots: list[int]) -> None:
        """Sets each exemplar's per-token activations from the pool row of its feature's `slots` entry: only the
        kept items are read (turning the whole pool into Python lists took 20 s at 46,080 features)."""
        features = torch.tensor([e.feature_index for e in exemplars], dtype=torch.long, device=self.device)
        rows = self.row[features, torch.tensor(slots, dtype=torch.long, device=self.device)]
        for exemplar, activations in zip(exemplars, self.pool[features, rows].tolist(), strict=True):
            exemplar.activations = activations

    def _reported_bins(self) -> list[list[int]]:
        """Returns each slot's bin 1..Q of the feature's final max (`quantiles` equal-width bins)."""
        q = max(self.plan.quantiles, 1)
        ratio = self.value / self.act_max.clamp(min=1e-30).unsqueeze(1)
        return ((torch.ceil(ratio * q).long() - 1).clamp(0, q - 1) + 1).tolist()

    # checkpoints ----------------------------------------------------------------------------------

    _TENSORS = ("value", "key", "window", "row", "pool", "act_sum", "act_max", "token_histogram", "histogram")

    def state_dict(self) -> dict[str, Any]:
        """Returns everything needed to continue, on the CPU."""
        self.prune_windows()
        state: dict[str, Any] = {name: getattr(self, name).cpu() for name in self._TENSORS}
        state["counters"] = [self.tokens, self.batches, self.windows_seen]
        state["windows"] = [(n, w.doc_id, w.offset, w.token_ids) for n, w in self.windows.items()]
        if self.cooccurrence is not None:  # neighbours hook
            state["cooccurrence"] = self.cooccurrence.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores a `state_dict`; raises CheckpointError, changing nothing, when a tensor is missing
        (a state saved by an older autointerp) or has another shape."""
        for name in self._TENSORS:
            if name not in state:
                raise CheckpointError(f"checkpoint has no tensor {name}: it was written by an older autointerp")
            if state[name].shape != getattr(self, name).shape:
                raise CheckpointError(f"checkpoint tensor {name} has shape {tuple(state[name].shape)}")
        if self.cooccurrence is not None and "cooccurrence" not in state:  # neighbours hook
            raise CheckpointError("checkpoint has no co-occurrence log: it was written with neighbours off")
        for name in self._TENSORS:
            setattr(self, name, state[name].to(self.device))
        self.tokens, self.batches, self.windows_seen = state["counters"]
        self.windows = {n: Window(doc_id=d, offset=o, token_ids=list(t)) for n, d, o, t in state["windows"]}
        if self.cooccurrence is not None:  # neighbours hook
            self.cooccurrence.load_state_dict(state["cooccurrence"])
