"""Neighbours by co-occurrence: how often two of the run's features fire in the same windows, exact under
any split of the corpus into shards.

"Fires" is the evidence rule (`autointerp.activations`): a window fires for a feature when its max is at
least `FIRES_FRACTION` (10 %) of the feature's max over the whole corpus. That max is known only at the
end, so while streaming, `CooccurrenceLog` keeps every (window, feature, window max) whose window max
reaches 10 % of the feature's *running* max: the running max only grows, so an entry below it can never
fire and is dropped, and no entry that fires at the final max is lost. At the end the entries are
filtered with the final max by the same `fires` rule the evidence uses. Shards see disjoint windows
(global window numbers), so the merge is the concatenation of their logs, filtered with the merged max:
the counts equal those of one pass over the whole corpus.

Cost per batch: one comparison over the batch's (features x windows) maxima and one nonzero (on a GPU,
one synchronisation with the host per batch, to copy the new entries to the CPU).

Memory: 16 bytes per entry, about the run's firing (window, feature) pairs (a feature firing in 5 % of
10,000 windows adds 500 entries); entries that can no longer fire are dropped whenever the log doubles.
Past `max_entries` (default 20 million, ~320 MB) the log stops, says so in the log, and the run has no
co-occurrence neighbours (cosine neighbours are unaffected): at 46,080 neurons x 10,000 windows x a
typical 5 % firing rate the log holds ~23 million entries, so raise the cap for all-neuron runs.

The counts: a sparse (features x windows) 0/1 matrix B^T (CSR) times a dense (windows x rows) block of B,
for a block of features at a time, each block reduced to its top k before the next: memory is one block
(`rows x max(features, windows)` floats), never the full square matrix; the work is the firing entries
times the features (float32 products of 0/1 are exact integers below 2^24 windows; float64 above).
The neighbour value is the Jaccard fraction count / (fired(a) + fired(b) - count); equal fractions rank
the larger count, then the lower position, first; features that never fire together are not neighbours.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from autointerp.activations import FIRES_FRACTION
from autointerp.neighbours.records import Neighbour

log = logging.getLogger(__name__)

DEFAULT_MAX_ENTRIES = 20_000_000
"""Entries (window, feature, window max) the log holds before it stops (16 bytes each)."""

_STREAM_SLACK = 0.999
"""The stream keeps entries down to this share of the running threshold (float32 rounding can put a
window max that fires at the final max a hair under a float32 threshold); the end filter is exact."""

MAX_BLOCK_ELEMENTS = 1 << 23
"""Counts held at once (float64): a block of features times the run's features."""


@dataclass(frozen=True)
class FiringWindows:
    """The (window, feature) pairs that fire at the final max: `window` [m] global window numbers and
    `feature` [m] positions in the run's features, sorted by window then feature."""

    window: torch.Tensor
    feature: torch.Tensor
    n_features: int


class CooccurrenceLog:
    """The streaming log of windows that may fire, per feature (see the module docstring)."""

    def __init__(
        self, n_features: int, k: int, max_entries: int = DEFAULT_MAX_ENTRIES, compact_at: int = 1 << 20
    ) -> None:
        self.n_features, self.k, self.max_entries, self.min_compact = n_features, k, max_entries, compact_at
        self._window: list[torch.Tensor] = []
        self._feature: list[torch.Tensor] = []
        self._value: list[torch.Tensor] = []
        self.entries = 0
        self._compact_at = min(compact_at, max_entries + 1)  # compact on passing the cap, at the latest
        self.overflowed = False

    def add(self, window_max: torch.Tensor, running_max: torch.Tensor, first_window: int) -> None:
        """Adds a batch: `window_max` [features, batch] of windows first_window.., with the features' running
        max [features] including this batch. One comparison and one nonzero per batch."""
        if self.overflowed:
            return
        threshold = torch.where(running_max > 0, running_max * (FIRES_FRACTION * _STREAM_SLACK), torch.inf)
        feature, column = (window_max >= threshold.unsqueeze(1)).nonzero(as_tuple=True)  # one pass over (F, B)
        if feature.numel() == 0:
            return
        self._window.append((column + first_window).cpu())
        self._feature.append(feature.to(torch.int32).cpu())
        self._value.append(window_max[feature, column].float().cpu())
        self.entries += feature.numel()
        if self.entries >= self._compact_at:
            self.compact(running_max)

    def compact(self, running_max: torch.Tensor) -> None:
        """Drops the entries that can no longer fire under `running_max` [features]; stops the log (freeing
        it) when it still holds more than `max_entries`."""
        window, feature, value = self._merged()
        keep = value >= (running_max.cpu() * (FIRES_FRACTION * _STREAM_SLACK))[feature.long()]
        self._window, self._feature, self._value = [window[keep]], [feature[keep]], [value[keep]]
        self.entries = int(keep.sum())
        self._compact_at = min(max(2 * self.entries, self.min_compact), self.max_entries + 1)
        if self.entries > self.max_entries:
            log.warning(
                "co-occurrence log: %d entries exceed neighbours.max_cooccurrence_entries (%d); no co-occurrence "
                "neighbours for this run (raise the cap to keep them)",
                self.entries,
                self.max_entries,
            )
            self.overflowed = True
            self._window, self._feature, self._value, self.entries = [], [], [], 0

    def _merged(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not self._window:
            return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.int32), torch.zeros(0)
        return torch.cat(self._window), torch.cat(self._feature), torch.cat(self._value)

    def firing(self, final_max: Sequence[float] | torch.Tensor) -> FiringWindows | None:
        """Returns the pairs that fire at the features' final max (`fires`: window max >= FIRES_FRACTION x
        max, max > 0), sorted by window then feature; None when the log overflowed."""
        if self.overflowed:
            return None
        window, feature, value = self._merged()
        peak = torch.as_tensor(final_max, dtype=torch.float64).cpu()
        threshold = torch.where(peak > 0, FIRES_FRACTION * peak, torch.inf)
        keep = value.double() >= threshold[feature.long()]
        window, feature = window[keep], feature[keep].long()
        order = torch.argsort(window * self.n_features + feature)
        return FiringWindows(window[order], feature[order], self.n_features)

    def neighbours(self, feature_ids: Sequence[str], final_max: Sequence[float] | torch.Tensor) -> list[Neighbour]:
        """Returns each feature's `k` nearest by co-occurrence (see `cooccurrence_neighbours`); [] when the log
        overflowed."""
        fired = self.firing(final_max)
        return [] if fired is None else cooccurrence_neighbours(fired, feature_ids, self.k)

    # checkpoints and shard merges -----------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Returns the log's entries (CPU tensors), its settings and whether it overflowed."""
        window, feature, value = self._merged()
        return {
            "window": window,
            "feature": feature,
            "value": value,
            "overflowed": self.overflowed,
            "settings": [self.n_features, self.k, self.max_entries],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores a `state_dict` (replacing what the log holds)."""
        self._window, self._feature, self._value = [state["window"]], [state["feature"]], [state["value"]]
        self.entries = int(state["window"].numel())
        self._compact_at = min(max(2 * self.entries, self.min_compact), self.max_entries + 1)
        self.overflowed = bool(state["overflowed"])

    @classmethod
    def merged(cls, states: Sequence[dict[str, Any]]) -> CooccurrenceLog:
        """Returns the log of the union of shards' disjoint windows (their states concatenated, with the first
        one's settings; overflowed when any shard's log did)."""
        merged = cls(*states[0]["settings"])
        if any(s["overflowed"] for s in states):
            merged.overflowed = True
            return merged
        merged.load_state_dict(
            {
                "window": torch.cat([s["window"] for s in states]),
                "feature": torch.cat([s["feature"] for s in states]),
                "value": torch.cat([s["value"] for s in states]),
                "overflowed": False,
            }
        )
        return merged


class CoFiring:
    """The firing windows as a sparse (features x windows) 0/1 matrix, ready for blocks of co-firing counts."""

    def __init__(self, fired: FiringWindows) -> None:
        self.n_features = fired.n_features
        _, window = torch.unique(fired.window, return_inverse=True)  # renumbered 0..W-1
        self.n_windows = int(window.max()) + 1 if window.numel() else 0
        self.dtype = torch.float32 if self.n_windows < 1 << 24 else torch.float64  # exact integer counts
        order = torch.argsort(fired.feature * max(self.n_windows, 1) + window)
        self.feature, self.window = fired.feature[order], window[order]
        self.own = torch.bincount(self.feature, minlength=self.n_features)
        rows = torch.zeros(self.n_features + 1, dtype=torch.long)
        rows[1:] = self.own.cumsum(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's "sparse CSR ... beta" notice
            self.by_feature = torch.sparse_csr_tensor(
                rows, self.window, torch.ones(self.window.numel(), dtype=self.dtype), (self.n_features, self.n_windows)
            )

    def counts(self, start: int, stop: int) -> torch.Tensor:
        """Returns the co-firing window counts [stop - start, n_features] (exact integers) of features
        start..stop-1 with every feature (the diagonal: each one's own firing windows)."""
        mine = (self.feature >= start) & (self.feature < stop)
        block = torch.zeros((self.n_windows, stop - start), dtype=self.dtype)  # (W, rows)
        block[self.window[mine], self.feature[mine] - start] = 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return (self.by_feature @ block).T  # (rows, F): sparse (F, W) times dense (W, rows)


def cooccurrence_neighbours(
    fired: FiringWindows, feature_ids: Sequence[str], k: int, max_block_elements: int = MAX_BLOCK_ELEMENTS
) -> list[Neighbour]:
    """Returns, for every feature, its `k` nearest features by the Jaccard fraction of co-firing windows
    (count / (fired(a) + fired(b) - count)), rank 1 first; a pair that never fires together is left out."""
    matrix = CoFiring(fired)
    n = matrix.n_features
    own = matrix.own.double()
    rows = max(1, min(n, max_block_elements // max(n, matrix.n_windows, 1)))
    out: list[Neighbour] = []
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        counts = matrix.counts(start, stop).double()  # (rows, n), exact integers
        union = own[start:stop].unsqueeze(1) + own.unsqueeze(0) - counts
        jaccard = torch.where(counts > 0, counts / union.clamp(min=1), -1.0)
        jaccard[torch.arange(stop - start), torch.arange(start, stop)] = -1.0  # not its own neighbour
        # rank by fraction, then count (both descending), then position: stable sorts, the last key first
        by_count = torch.sort(counts, dim=1, descending=True, stable=True).indices
        order = by_count.gather(1, torch.sort(jaccard.gather(1, by_count), dim=1, descending=True, stable=True).indices)
        order = order[:, :k]
        picked_jaccard, picked_counts = jaccard.gather(1, order).tolist(), counts.gather(1, order).tolist()
        for local, picked in enumerate(order.tolist()):
            f, values, together = start + local, picked_jaccard[local], picked_counts[local]
            ranked = [(j, v, c) for j, v, c in zip(picked, values, together, strict=True) if v > 0]
            out.extend(
                Neighbour(feature_ids[f], feature_ids[j], "cooccurrence", v, rank, int(c))
                for rank, (j, v, c) in enumerate(ranked, start=1)
            )
    return out
