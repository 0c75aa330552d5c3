"""Observe: stream the corpus through a feature source and keep, per feature, what sampling needs.

Per feature, as in Bills et al. (2023) and Paulo et al. (2024):
- `top`: the k windows with the largest maximum activation;
- `quantile-j`: up to `per_quantile` windows sampled uniformly from each of `quantiles` equal-width
  bins of the window max, bin j holding windows whose max is in ((j-1)/Q, j/Q] x the feature's max
  (sampled from kept bins that are exact under any split of the corpus; see `quantile_bin_top`);
- `random` (non-activating): up to `random_windows` windows where the feature does not fire (every
  token below 10 % of the final max), sampled by random key among them; a feature with fewer such
  windows keeps what exists (never a firing window in their place);
- statistics: max, mean, a histogram of window maxima over fixed log2 bins (`HISTOGRAM_EDGES`), and
  density: the share of tokens that fire, i.e. whose activation is at least 10 % of the feature's
  max (`autointerp.activations.FIRES_FRACTION`, the one definition scoring and the review app use).
  The max is known only at the end, so every token is counted into a per-feature histogram of fixed
  bins (`autointerp.token_histogram`: 8 bins per octave) and density is read off it at the end,
  interpolating inside the bin that holds the threshold: it lies between the exact shares at 8/9
  and 9/8 of the threshold. The counts add, so shards merge exactly.

Everything is kept in fixed-size tensors on the model's device, so memory is
features x ((k + 6 x random + 2 x quantiles x per_quantile) x window length + TOKEN_BINS (387) counts),
whatever the corpus length.

How a window is ranked: one reduction per window and feature (its max), then a top-k over the
kept windows plus the batch's (equal maxima: the lower window number first). The reservoirs use
bottom-r random keys: every (window, feature) gets a uniform key that is a hash of (seed, feature,
window number) only (`random_keys`); each bin keeps the items with the smallest keys (equal keys:
the lower window number), which is a uniform sample of the windows that went into that bin. The
quantile bins kept are 2Q equal-width bins of (0, T], T the feature's max rounded up to a power of
two: T changes only when the max doubles, and then pairs of bins merge, so what is kept is a
function of the set of windows seen, whatever their order or split: a corpus collected in shards
and merged (`autointerp.distributed.merge`) keeps exactly the items of one pass over it. The
reported bin j of the final max takes the kept items whose max falls in it, smallest keys first;
top and quantile windows that do not fire at the final max are dropped.

Non-activating windows need the final max, which a stream does not know; the running max only
grows, so what is quiet now stays quiet. The random reservoir keeps `random_windows` items in each
of `RANDOM_BINS` bins of the window max relative to T: bin 0 holds windows at or below T/32 (quiet
under any final max, since the final max exceeds T/2), bins 1..5 the octaves (T/32, T/16], ...,
(T/2, T]. When T doubles the octaves shift down one bin and the lowest joins bin 0, so, like the
quantile bins, what is kept depends only on the set of windows seen. At the end the windows below
10 % of the final max (bin 0 and parts of bins 1-2) are candidates and the `random_windows` with the
smallest keys are reported: every one is a window where the feature does not fire.

Per-token activations are written only for newly kept items (into a per-feature pool of rows
that kept items point to). The per-token passes (window max, sum, token histogram) read each
chunk of the batch once (one chunk per hooked layer; no concatenated [batch, tokens, features]
tensor). The merge itself has two implementations that keep the same items in the same order
(a test runs both): on the CPU, `merge_cpu.merge_batch`, a compiled loop that visits each feature
once and inserts a window only where it beats the worst kept item; elsewhere (GPU), tensor
operations over the features a batch can change (`_rows_to_merge`), a few thousand at a time.

Checkpoints: the whole state (tensors, counters and the token ids of windows still referenced)
is saved atomically every `checkpoint_every` batches; a run that finds a checkpoint with the same
fingerprint skips the windows it already saw and continues (a checkpoint without the token
histogram, from an older autointerp, is ignored and collection starts over). Random keys depend only on the window
number, so a resumed run keeps exactly the exemplars of an uninterrupted one.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from autointerp.activations import fires
from autointerp.corpus import Window
from autointerp.errors import AutointerpError
from autointerp.merge_cpu import QUIET_LEVELS, RANDOM_BINS, merge_on_cpu, window_stats
from autointerp.progress import progress_bar
from autointerp.token_histogram import TOKEN_BINS, add_to_histogram, densities

log = logging.getLogger(__name__)

ActivationFn = Callable[[torch.Tensor], torch.Tensor | list[torch.Tensor]]
"""Maps token ids [batch, tokens] to feature activations [batch, tokens, features], or to chunks
of them split on the feature axis (see `ExemplarSampler.update`)."""

HISTOGRAM_EDGES: list[float] = [2.0**e for e in range(-6, 9)]
"""Upper edges of the window-max histogram: bin 0 holds max <= 0, bin i holds (edge[i-2], edge[i-1]]
(edge[-1] = 0), the last bin holds max > 256."""

_EMPTY_KEY = 0.95  # an empty slot's offset in its bin: loses against every real item (< 0.5)

_KEY_BITS = 24  # keys are multiples of 2**-24 in [0, 1), exact in float32
_MIX = (0xBF58476D1CE4E5B9, 0x94D049BB133111EB)  # splitmix64's multipliers
_STEP = (0x9E3779B97F4A7C15, 0xD6E8FEB86659FD93, 0xA0761D6478BD642F)


def _signed(value: int) -> int:
    """Returns a 64-bit pattern as the int64 that holds it."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def random_keys(seed: int, stream: int, n_features: int, first: int, batch: int, device: torch.device) -> torch.Tensor:
    """Returns keys [features, batch] in [0, 1) for windows first..first + batch - 1: a hash (splitmix64)
    of (seed, stream, feature, window number) only, so any split of the corpus into shards or batches
    gives every (feature, window) the same key; the reservoirs keep the smallest keys."""
    feature = torch.arange(n_features, dtype=torch.int64, device=device).unsqueeze(1)
    window = torch.arange(first, first + batch, dtype=torch.int64, device=device).unsqueeze(0)
    x = feature * _signed(_STEP[0]) + window * _signed(_STEP[1]) + _signed((seed * 2 + stream) * _STEP[2])
    for bits, multiplier in ((30, _MIX[0]), (27, _MIX[1])):
        x = (x ^ _shift_right(x, bits)) * _signed(multiplier)
    x = x ^ _shift_right(x, 31)
    return _shift_right(x, 64 - _KEY_BITS).float() / float(1 << _KEY_BITS)


def quantile_bin_top(feature_max: torch.Tensor) -> torch.Tensor:
    """Returns the top of the kept quantile bins: each feature's max rounded up to a power of two.

    It changes only when the max doubles, and then each new bin is the union of two old ones, whose
    kept items (smallest keys) hold the new bin's smallest keys: so the kept bins are a function of
    the set of windows seen, not of their order, and shards merge exactly. Twice `quantiles` bins are
    kept so that every bin of the final max (what `exemplars` reports) has kept items to draw from.
    """
    mantissa, exponent = torch.frexp(feature_max.float().clamp(min=1e-30))
    return torch.where(
        mantissa == 0.5, feature_max.float().clamp(min=1e-30), torch.ldexp(torch.ones_like(mantissa), exponent)
    )


def random_bin(value: torch.Tensor, feature_max: torch.Tensor) -> torch.Tensor:
    """Returns the random reservoir's bins 0..QUIET_LEVELS of window maxima `value` [features, n] for
    each feature's max: 0 at or below T/32 (T = `quantile_bin_top`), else 1 + the octave of value / T
    counted from (T/32, T/16]. Exact: dividing by a power of two and `frexp` do not round."""
    ratio = value / quantile_bin_top(feature_max).unsqueeze(1)
    mantissa, exponent = torch.frexp(ratio)
    octave = exponent - (mantissa == 0.5).to(exponent.dtype)  # ceil(log2(ratio))
    return torch.where(ratio <= 2.0**-QUIET_LEVELS, 0, (octave.long() + QUIET_LEVELS).clamp(1, QUIET_LEVELS))


def _sort_key(bin_: torch.Tensor | int, key: torch.Tensor) -> torch.Tensor:
    """Sort keys (float64, exact) in a reservoir bin: bin + key / 2."""
    return bin_ + 0.5 * key.double()


class CheckpointError(AutointerpError):
    """A collection checkpoint exists but cannot be used."""


class NonFiniteActivationError(AutointerpError):
    """A feature source produced NaN or infinite activations."""


def _first_non_finite(chunks: Sequence[torch.Tensor]) -> tuple[int, int, int, float] | None:
    """Returns (feature, window in batch, token, value) of the first NaN or infinite activation, by feature."""
    offset = 0
    for chunk in chunks:
        bad = ~torch.isfinite(chunk)
        if bool(bad.any()):
            where = bad.nonzero()  # row-major: the first entry of the lowest feature is its first window
            window, token, feature = (int(i) for i in where[where[:, 2].argmin()])
            return offset + feature, window, token, float(chunk[window, token, feature])
        offset += chunk.shape[2]
    return None


def check_finite(
    acts: torch.Tensor | Sequence[torch.Tensor], windows: list[Window], feature_names: Sequence[str]
) -> None:
    """Raises NonFiniteActivationError naming the feature and the window of the first NaN or infinite
    activation in a batch; returns None when every value is finite."""
    chunks = [acts] if isinstance(acts, torch.Tensor) else list(acts)
    found = _first_non_finite(chunks)
    if found is None:
        raise NonFiniteActivationError(
            "activations overflowed when summed (values near the float32 limit); rescale the feature source"
        )
    feature, row, token, value = found
    window = windows[row]
    raise NonFiniteActivationError(
        f"feature {feature_names[feature]} has a non-finite activation ({value}) at token {token} of window "
        f"{window.doc_id}:{window.offset} (document {window.doc_id}, token offset {window.offset}); "
        "a direction with NaN entries, an overflowing model dtype, or a planted function returning NaN/inf"
    )


@dataclass
class FeatureStats:
    """Activation statistics of one feature over every token seen."""

    max_activation: float
    mean_activation: float
    density: float
    """Share of tokens that fire (activation >= FIRES_FRACTION x max; see `token_histogram.densities`)."""
    tokens: int
    histogram: list[int] = field(default_factory=list)
    """Counts of window maxima per `HISTOGRAM_EDGES` bin."""

    @property
    def dead(self) -> bool:
        """True when every activation seen was exactly 0 (never positive, and summing to 0).

        A feature with negative values is not dead: signed sources (directions, planted features)
        are legitimate, and their exemplars are kept like any other feature's."""
        return self.max_activation <= 0.0 and self.mean_activation == 0.0


@dataclass
class Exemplar:
    """One kept window of one feature, with that feature's per-token activations."""

    feature_index: int
    kind: str  # "top", "quantile-<j>" or "random"
    rank: int
    window: Window
    activations: list[float]
    split: str  # "explain" or "score"

    @property
    def max_activation(self) -> float:
        """Returns the largest activation in the window."""
        return max(self.activations)


@dataclass
class CollectionResult:
    """Per-feature statistics and exemplars, positionally aligned with `feature_indices`."""

    feature_indices: list[int]
    stats: list[FeatureStats]
    exemplars: list[Exemplar] = field(default_factory=list)

    def window_counts(self) -> list[tuple[int, int]]:
        """Returns (firing top windows, non-firing windows) kept for each feature, by position."""
        counts = [[0, 0] for _ in self.stats]
        for exemplar in self.exemplars:
            if exemplar.kind in ("top", "random"):
                counts[exemplar.feature_index][exemplar.kind == "random"] += 1
        return [(top, quiet) for top, quiet in counts]


@dataclass(frozen=True)
class SamplingPlan:
    """How many windows of each kind every feature keeps."""

    top_k: int
    random_windows: int
    quantiles: int = 0
    per_quantile: int = 0
    seed: int = 0

    @property
    def kept_bins(self) -> int:
        """Returns how many quantile bins the sampler keeps: twice `quantiles` (see `quantile_bin_top`)."""
        return 2 * self.quantiles if self.per_quantile else 0

    @property
    def random_slots(self) -> int:
        """Returns the slots of the random reservoir: `random_windows` in each of its RANDOM_BINS bins."""
        return self.random_windows * RANDOM_BINS

    @property
    def reservoir_slots(self) -> int:
        """Returns the slots of the random reservoir plus the kept quantile bins."""
        return self.random_slots + self.kept_bins * self.per_quantile


class ExemplarSampler:
    """The streaming state: kept windows per feature, their activations, and statistics."""

    def __init__(self, n_features: int, window_tokens: int, plan: SamplingPlan, device: torch.device) -> None:
        self.plan, self.device = plan, device
        self.n_features, self.window_tokens = n_features, window_tokens
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

    # one batch ----------------------------------------------------------------------------------

    def _keys(self, first: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the random and quantile keys [features, batch] of windows first..first + batch - 1."""
        return tuple(  # type: ignore[return-value]
            random_keys(self.plan.seed, stream, self.n_features, first, batch, self.device) for stream in (0, 1)
        )

    def _quantile_bin(self, value: torch.Tensor, feature_max: torch.Tensor) -> torch.Tensor:
        """Returns the layout bins (RANDOM_BINS + 0..2Q - 1) of window maxima in the kept quantile bins,
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
        rose = window_max.amax(dim=1) > self.act_max
        self.act_max = torch.maximum(self.act_max, window_max.amax(dim=1))
        random_key, quantile_key = self._keys(first, batch)
        if self.compiled:
            state = {name: getattr(self, name) for name in ("value", "key", "window", "row", "act_max", "histogram")}
            state["edges"] = self.edges
            feature, pool_row, batch_row = merge_on_cpu(
                state, window_max, random_key, quantile_key, rose, self._plan_sizes, first
            )
            self._store_activations(chunks, feature, pool_row, batch_row)
        else:
            positive = window_max > 0
            bins = torch.where(positive, torch.bucketize(window_max, self.edges) + 1, 0)
            self.histogram.scatter_add_(1, bins, torch.ones_like(bins))
            self._merge_rows(window_max, positive, random_key, quantile_key, rose, chunks, first)

        for offset, window in enumerate(windows):
            self.windows[first + offset] = window
        self.windows_seen += batch
        self.tokens += batch * tokens
        self.batches += 1
        if self.batches % 16 == 0:
            self.prune_windows()

    def _window_stats(self, chunks: list[torch.Tensor]) -> torch.Tensor:
        """Adds the batch to sums and token histograms; returns window maxima [features, batch] (chunk by chunk)."""
        self.act_sum += torch.cat([c.sum(dim=(0, 1), dtype=torch.float32) for c in chunks]).double()
        offset = 0
        for chunk in chunks:
            add_to_histogram(self.token_histogram, chunk, offset)
            offset += chunk.shape[2]
        return torch.cat([c.amax(dim=1) for c in chunks], dim=1).T.float().contiguous()

    def _window_stats_on_cpu(self, chunks: list[torch.Tensor]) -> torch.Tensor:
        """`_window_stats` in one compiled read of each float32 chunk."""
        window_max = torch.empty((self.n_features, chunks[0].shape[0]))
        offset = 0
        for chunk in chunks:
            values = chunk.contiguous().numpy()
            sums, histogram = self.act_sum.numpy(), self.token_histogram.numpy()
            window_stats(values, values.view("int32"), window_max.numpy(), sums, histogram, offset)
            offset += chunk.shape[2]
        return window_max

    def _merge_rows(
        self,
        window_max: torch.Tensor,
        positive: torch.Tensor,
        random_key: torch.Tensor,
        quantile_key: torch.Tensor,
        rose: torch.Tensor,
        chunks: list[torch.Tensor],
        first: int,
    ) -> None:
        """The tensor merge: every feature the batch can change, a few thousand at a time."""
        rows = self._rows_to_merge(window_max, positive, random_key, quantile_key, rose)
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
        rose: torch.Tensor,
    ) -> torch.Tensor | None:
        """Returns the features whose kept items this batch can change (None: all of them).

        A batch window changes nothing unless it beats the k-th top value or the worst sort key
        of the reservoir bin it would enter; a feature whose max rose is re-binned. Skipping the
        others gives exactly the state a full merge would; late in a long corpus few features
        need one, which is what keeps collection near the speed of the bare forward pass.
        """
        if not self.gate:
            return None
        k = self._k
        need = rose | (window_max > self.value[:, k - 1 : k]).any(dim=1)
        if self.plan.reservoir_slots:
            # a feature whose max did not rise keeps its items in their bins: no re-binning
            old_sort = self._old_sort(self.slot_bin.unsqueeze(0).expand_as(self.key[:, k:]))
            worst = torch.zeros((self.n_features, len(self.bin_caps)), dtype=torch.float64, device=self.device)
            worst.scatter_reduce_(1, self.slot_bin.expand_as(old_sort), old_sort, "amax", include_self=False)
            if self.plan.random_windows:
                batch_bin = random_bin(window_max, self.act_max)
                need |= (_sort_key(batch_bin, random_key) < worst.gather(1, batch_bin)).any(dim=1)
            if self.plan.kept_bins:
                batch_bin = self._quantile_bin(window_max, self.act_max)
                batch_sort = _sort_key(batch_bin, quantile_key)
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
        return old_bin + torch.where(old_real, _sort_key(0, self.key[rows, k:]), _EMPTY_KEY)

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
        # kept items move to the bin of the current max (a no-op where the max did not rise)
        old_real = self.window[rows, k:] >= 0
        old_bin = torch.where(old_real, self._reservoir_bin(old_value, self.act_max[rows]), slot_bin)
        parts = [self._old_sort(old_bin, rows), _sort_key(random_bin(window_max, self.act_max[rows]), random_key)]
        batch_window = torch.arange(first, first + batch, device=self.device).expand(n_rows, batch)
        windows = [self.window[rows, k:], batch_window]
        if self.plan.kept_bins:
            batch_bin = self._quantile_bin(window_max, self.act_max[rows])
            parts.append(torch.where(positive, _sort_key(batch_bin, quantile_key), float("inf")))
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
        referenced = set(torch.unique(self.window).tolist())
        self.windows = {n: w for n, w in self.windows.items() if n in referenced}

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
        gathered = self.pool.gather(1, self.row.unsqueeze(-1).expand(-1, -1, self.window_tokens))
        windows, acts, values = self.window.tolist(), gathered.tolist(), self.value.tolist()
        maxima, keys = self.act_max.tolist(), self.key.tolist()
        first_quantile = k + plan.random_slots
        quantile_bins = self._reported_bins()
        result = []
        for f in range(self.n_features):
            if stats[f].dead:
                continue

            def kept(slots: range, f: int = f) -> list[int]:
                return [slot for slot in slots if windows[f][slot] >= 0]

            def item(kind: str, rank: int, slot: int, split: str, f: int = f) -> Exemplar:
                return Exemplar(f, kind, rank, self.windows[windows[f][slot]], acts[f][slot], split)

            top = [slot for slot in kept(range(k)) if fires(values[f][slot], maxima[f])]
            for rank, slot in enumerate(top):
                result.append(item("top", rank, slot, "explain" if rank % 2 == 0 else "score"))
            # non-activating: the quiet candidates of the random bins, smallest keys first (ties: window number)
            quiet = [slot for slot in kept(range(k, first_quantile)) if not fires(values[f][slot], maxima[f])]
            quiet.sort(key=lambda slot: (keys[f][slot], windows[f][slot]))
            for rank, slot in enumerate(quiet[: plan.random_windows]):
                result.append(item("random", rank, slot, "score"))
            # each bin of the final max: its kept firing items with the smallest keys (equal keys: window number)
            by_bin: dict[int, list[tuple[float, int, int]]] = {}
            for slot in kept(range(first_quantile, len(windows[f]))):
                if fires(values[f][slot], maxima[f]):
                    by_bin.setdefault(quantile_bins[f][slot], []).append((keys[f][slot], windows[f][slot], slot))
            for j in sorted(by_bin):
                for rank, (_, _, slot) in enumerate(sorted(by_bin[j])[: plan.per_quantile]):
                    result.append(item(f"quantile-{j}", rank, slot, "explain" if rank % 2 == 0 else "score"))
        return _renumber(_distinct_windows(result))

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
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores a `state_dict`; raises CheckpointError, changing nothing, when a tensor is missing
        (a state saved by an older autointerp) or has another shape."""
        for name in self._TENSORS:
            if name not in state:
                raise CheckpointError(f"checkpoint has no tensor {name}: it was written by an older autointerp")
            if state[name].shape != getattr(self, name).shape:
                raise CheckpointError(f"checkpoint tensor {name} has shape {tuple(state[name].shape)}")
        for name in self._TENSORS:
            setattr(self, name, state[name].to(self.device))
        self.tokens, self.batches, self.windows_seen = state["counters"]
        self.windows = {n: Window(doc_id=d, offset=o, token_ids=list(t)) for n, d, o, t in state["windows"]}


def _kind_priority(kind: str) -> int:
    return 0 if kind == "top" else 2 if kind == "random" else 1


def _distinct_windows(exemplars: list[Exemplar]) -> list[Exemplar]:
    """Keeps each window once per feature, under its first kind in the order top, quantiles, random: a
    window kept as top is not also a quantile or random one, so no window sits on both sides of the
    explain / score split or twice in the score split."""
    ordered = sorted(exemplars, key=lambda e: (e.feature_index, _kind_priority(e.kind), e.kind, e.rank))
    seen: set[tuple[int, int, int]] = set()
    kept = []
    for exemplar in ordered:
        key = (exemplar.feature_index, exemplar.window.doc_id, exemplar.window.offset)
        if key not in seen:
            seen.add(key)
            kept.append(exemplar)
    return kept


def _renumber(exemplars: list[Exemplar]) -> list[Exemplar]:
    """Gives the kept windows of each (feature, kind) consecutive ranks from 0 (after empty slots and
    dropped duplicates), and alternates the explain / score split of top and quantile windows by rank."""
    counters: dict[tuple[int, str], int] = {}
    for exemplar in exemplars:
        key = (exemplar.feature_index, exemplar.kind)
        exemplar.rank = counters.get(key, 0)
        counters[key] = exemplar.rank + 1
        if exemplar.kind != "random":
            exemplar.split = "explain" if exemplar.rank % 2 == 0 else "score"
    return exemplars


def _batches(windows: Iterable[Window], batch_size: int) -> Iterator[list[Window]]:
    batch: list[Window] = []
    for window in windows:
        batch.append(window)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _save_checkpoint(path: Path, fingerprint: str, sampler: ExemplarSampler) -> None:
    """Writes the state atomically (temporary file, then rename), so a kill leaves the last good one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save({"fingerprint": fingerprint, "state": sampler.state_dict()}, staging)
    os.replace(staging, path)


def _load_checkpoint(path: Path, fingerprint: str, sampler: ExemplarSampler) -> bool:
    """Restores the state from `path` when it exists and matches; returns whether it did."""
    if not path.is_file():
        return False
    try:
        saved = torch.load(path, weights_only=True)
    except Exception as exc:
        log.warning("ignoring unreadable checkpoint %s (%s)", path, exc)
        return False
    if saved.get("fingerprint") != fingerprint:
        log.warning("ignoring checkpoint %s: it belongs to another collection", path)
        return False
    try:
        sampler.load_state_dict(saved["state"])
    except CheckpointError as exc:
        log.warning("ignoring checkpoint %s (%s); collecting from the start", path, exc)
        return False
    log.info("resuming collection from %s after %d windows", path, sampler.windows_seen)
    return True


def collect_exemplars(
    windows: Iterable[Window],
    activation_fn: ActivationFn,
    *,
    feature_indices: list[int],
    window_tokens: int,
    batch_size: int,
    top_k: int,
    random_windows: int,
    seed: int,
    device: torch.device,
    quantiles: int = 0,
    per_quantile: int = 0,
    total_windows: int | None = None,
    checkpoint: Path | None = None,
    checkpoint_every: int = 0,
    fingerprint: str = "",
    feature_names: Sequence[str] | None = None,
) -> CollectionResult:
    """Returns stats and exemplars for each feature, streaming `windows` in batches.

    Raises NonFiniteActivationError, naming the feature (from `feature_names`, default its index) and
    the first offending window, as soon as a batch holds a NaN or infinite activation.

    With `checkpoint` and `checkpoint_every` > 0, the state is saved every that many batches and
    a matching checkpoint is resumed from; the caller deletes the file once results are stored.
    """
    names = list(feature_names) if feature_names is not None else [f"#{i}" for i in feature_indices]
    plan = SamplingPlan(top_k, random_windows, quantiles if per_quantile else 0, per_quantile, seed)
    sampler = ExemplarSampler(len(feature_indices), window_tokens, plan, device)
    sampler.feature_names = names
    if checkpoint is not None and _load_checkpoint(checkpoint, fingerprint, sampler):
        windows = itertools.islice(windows, sampler.windows_seen, None)
    with progress_bar("collect", total=total_windows, unit="windows") as advance:
        advance(sampler.windows_seen)
        for batch in _batches(windows, batch_size):
            token_ids = torch.tensor([w.token_ids for w in batch], dtype=torch.long, device=device)
            with torch.inference_mode():
                acts = activation_fn(token_ids)
                sampler.update(acts, batch)
            advance(len(batch))
            if checkpoint is not None and checkpoint_every and sampler.batches % checkpoint_every == 0:
                _save_checkpoint(checkpoint, fingerprint, sampler)
    stats = sampler.stats()
    return CollectionResult(feature_indices=feature_indices, stats=stats, exemplars=sampler.exemplars(stats))
