"""The CPU merge of one batch into the sampler's kept items, as one compiled loop over features.

`ExemplarSampler._merge` expresses the merge as whole-tensor operations, which is what a GPU
wants; on a CPU those operations make ~80 passes over [features, kept + 3 x batch] arrays for
every batch, several times the cost of the rest of collection. Here each feature is visited
once: a batch window is compared with the worst kept item of the top-k list or of the
reservoir bin it would enter, and inserted in order only when it wins, which late in a corpus
is rare. The result is the state the tensor merge gives (same items, same order, same sort
keys); only the pool rows that items point to may be assigned differently.

Layout per feature (see `ExemplarSampler`): slots [0, k) are the top-k list, sorted by value,
descending; then the RANDOM_BINS random bins (quiet, then octaves of the window max relative to
the max's power-of-two top: `collect.keys.random_bin`) and the quantile bins, each sorted by sort key,
ascending, empty slots (window -1) last. Sort key (float64, exact): bin + key / 2; an empty slot's
offset is 0.95; equal sort keys are ordered by window number, so the kept items do not depend on
the order windows arrive in. When a feature's max rises past its power-of-two top (the bins' scale, so
only then), its random and quantile items move to the bins of the new max (`_rebin`). Each feature's top
is computed once per batch, not per window compared. Random keys are hashed here (`_random_key`, the bits of
`collect.keys.random_keys`) for the windows compared, and `copy_pending` copies the new items'
per-token activations into their pool rows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from numba import njit, prange

from autointerp.collect.histogram import BIN_SHIFT, CODE_OFFSET
from autointerp.collect.keys import KEY_BITS, MIX, QUIET_LEVELS, RANDOM_BINS, STEP

_F = np.float32
_BIN_SHIFT, _CODE_OFFSET = BIN_SHIFT, CODE_OFFSET  # globals numba freezes at compile time
_QUIET_LEVELS, _RANDOM_BINS = QUIET_LEVELS, RANDOM_BINS
_QUIET_RATIO = _F(2.0**-QUIET_LEVELS)
_U = np.uint64
_MIX0, _MIX1, _STEP0, _STEP1 = _U(MIX[0]), _U(MIX[1]), _U(STEP[0]), _U(STEP[1])
_KEY_SHIFT, _KEY_SCALE = _U(64 - KEY_BITS), _F(1.0 / (1 << KEY_BITS))
_S27, _S30, _S31 = _U(27), _U(30), _U(31)


def key_base(seed: int, stream: int) -> np.uint64:
    """Returns the (seed, stream) term of `collect.keys.random_keys`'s hash, as the compiled merge takes it."""
    return _U(((seed * 2 + stream) * STEP[2]) & ((1 << 64) - 1))


@njit(cache=True, inline="always")
def _random_key(base: np.uint64, feature: int, window: int) -> float:  # a float32 in compiled code
    """`collect.keys.random_keys` for one (feature, window): the same splitmix64 bits, in unsigned arithmetic."""
    x = _U(feature) * _STEP0 + _U(window) * _STEP1 + base
    x = (x ^ (x >> _S30)) * _MIX0
    x = (x ^ (x >> _S27)) * _MIX1
    x = x ^ (x >> _S31)
    return _F(x >> _KEY_SHIFT) * _KEY_SCALE  # type: ignore[return-value]


@njit(cache=True, inline="always")
def _bin_top(feature_max: float) -> np.float32:
    """`collect.keys.quantile_bin_top`: the max rounded up to a power of two."""
    top = max(_F(feature_max), _F(1e-30))
    mantissa, exponent = math.frexp(top)
    return top if mantissa == 0.5 else _F(math.ldexp(1.0, exponent))


@njit(cache=True, inline="always")
def _quantile_bin(value: float, top: np.float32, quantiles: int) -> int:
    """The kept quantile bin 1..quantiles of `value` under `top` (`_bin_top` of the feature's max)."""
    ratio = _F(value) / top
    return min(max(int(np.ceil(ratio * _F(quantiles))) - 1, 0), quantiles - 1) + 1


@njit(cache=True, inline="always")
def _random_bin(value: float, top: np.float32) -> int:
    """`collect.keys.random_bin` under `top` (`_bin_top` of the feature's max): 0 at or below top/32, else
    1 + the octave of value / top above top/32."""
    ratio = _F(value) / top
    if not ratio > _QUIET_RATIO:
        return 0
    mantissa, exponent = math.frexp(ratio)
    octave = exponent - 1 if mantissa == 0.5 else exponent  # ceil(log2(ratio))
    return min(max(octave + _QUIET_LEVELS, 1), _QUIET_LEVELS)


@njit(cache=True, inline="always")
def _sort_key(bin_: int, key: float, window: int) -> float:
    """Float64 and exact: the same keys as `collect.keys.bin_sort_key` (empty slots: bin + 0.95)."""
    if window < 0:
        return bin_ + 0.95
    return bin_ + 0.5 * np.float64(np.float32(key))


@njit(cache=True, inline="always")
def _before(sort_a: float, window_a: int, sort_b: float, window_b: int) -> bool:
    """Whether item a sorts before item b: by sort key, equal keys by window number."""
    return sort_a < sort_b or (sort_a == sort_b and window_a < window_b)


@njit(cache=True, inline="always")
def _histogram_bin(value: float, edges: np.ndarray) -> int:
    """Returns 0 for value <= 0, else 1 + the number of edges below value (torch.bucketize + 1)."""
    if not value > 0:
        return 0
    lo, hi = 0, len(edges)
    while lo < hi:
        mid = (lo + hi) // 2
        if edges[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo + 1


@njit(cache=True)
def _insert(value, key, window, row, f, start, end, bin_, new_value, new_key, new_window, new_row):  # type: ignore[no-untyped-def]
    """Inserts an item with pool row `new_row` into feature f's sorted bin [start, end), dropping
    the last item, when it sorts before that item (`_before`); returns whether it did."""
    new_sort = _sort_key(bin_, new_key, new_window)
    last = end - 1
    if not _before(new_sort, new_window, _sort_key(bin_, key[f, last], window[f, last]), window[f, last]):
        return False
    position = last
    while position > start and _before(
        new_sort, new_window, _sort_key(bin_, key[f, position - 1], window[f, position - 1]), window[f, position - 1]
    ):
        value[f, position] = value[f, position - 1]
        key[f, position] = key[f, position - 1]
        window[f, position] = window[f, position - 1]
        row[f, position] = row[f, position - 1]
        position -= 1
    value[f, position], key[f, position], window[f, position] = new_value, new_key, new_window
    row[f, position] = new_row
    return True


@njit(cache=True)
def _rebin(value, key, window, row, f, start, n_bins, per_bin, top, random):  # type: ignore[no-untyped-def]
    """Moves feature f's random (`random` True) or quantile items, `n_bins` bins of `per_bin` slots
    from `start`, to the bins of its new `top` (`_bin_top` of the max), keeping the best of each bin."""
    slots = n_bins * per_bin
    old_value = value[f, start : start + slots].copy()
    old_key = key[f, start : start + slots].copy()
    old_window = window[f, start : start + slots].copy()
    old_row = row[f, start : start + slots].copy()
    for slot in range(start, start + slots):
        value[f, slot], key[f, slot], window[f, slot] = -np.inf, 1.0, -1
    for i in range(slots):  # in slot order, so ties keep the order a stable sort gives
        if old_window[i] >= 0:
            bin_ = _random_bin(old_value[i], top) if random else _quantile_bin(old_value[i], top, n_bins) - 1
            bin_start = start + bin_ * per_bin
            _insert(
                value, key, window, row, f, bin_start, bin_start + per_bin, bin_,
                old_value[i], old_key[i], old_window[i], old_row[i],
            )  # fmt: skip
    # kept items carried their pool rows; empty slots take the rows no kept item holds
    held = np.zeros(slots, dtype=np.bool_)
    for slot in range(start, start + slots):
        for i in range(slots):
            if window[f, slot] >= 0 and old_row[i] == row[f, slot]:
                held[i] = True
    free = 0
    for slot in range(start, start + slots):
        if window[f, slot] < 0:
            while held[free]:
                free += 1
            row[f, slot] = old_row[free]
            held[free] = True


@njit(cache=True, parallel=True)
def merge_batch(  # type: ignore[no-untyped-def]
    value, key, window, row, pending, histogram, edges, window_max, random_base, quantile_base, act_max, rebin,
    top_k, random_windows, quantiles, per_quantile, first_window,
):  # fmt: skip
    """Merges a batch in place; sets pending[f, pool row] = batch row for every new item kept. Random keys
    are hashed here (`_random_key` of `random_base` / `quantile_base`), only for windows that need one.
    rebin[f]: the power-of-two top of feature f's max rose with this batch, so its reservoir items move bins
    (a max that rises below the same top leaves every item in its bin)."""
    n_features, batch = window_max.shape
    for f in prange(n_features):
        top = _bin_top(act_max[f])
        for b in range(batch):
            histogram[f, _histogram_bin(window_max[f, b], edges)] += 1
        # top-k: insertion into a list sorted by value, descending; ties keep the older item
        for b in range(batch):
            v = window_max[f, b]
            if not v > value[f, top_k - 1]:
                continue
            freed = row[f, top_k - 1]
            position = top_k - 1
            while position > 0 and value[f, position - 1] < v:
                value[f, position] = value[f, position - 1]
                window[f, position] = window[f, position - 1]
                row[f, position] = row[f, position - 1]
                position -= 1
            value[f, position], key[f, position], window[f, position] = v, 1.0, first_window + b
            row[f, position] = freed
            pending[f, freed] = b

        # random bins: every window is a candidate for the bin of its max (quiet, or an octave below the max)
        end = top_k + random_windows * _RANDOM_BINS
        if random_windows:
            if rebin[f]:
                _rebin(value, key, window, row, f, top_k, _RANDOM_BINS, random_windows, top, True)
            worst_random = np.empty(_RANDOM_BINS, dtype=np.float64)
            for bin_ in range(_RANDOM_BINS):
                last = top_k + (bin_ + 1) * random_windows - 1
                worst_random[bin_] = _sort_key(bin_, key[f, last], window[f, last])
            for b in range(batch):
                bin_ = _random_bin(window_max[f, b], top)
                random_key = _random_key(random_base, f, first_window + b)
                if not _sort_key(bin_, random_key, 0) < worst_random[bin_]:
                    continue
                bin_start = top_k + bin_ * random_windows
                last = bin_start + random_windows - 1
                freed = row[f, last]
                _insert(
                    value, key, window, row, f, bin_start, last + 1, bin_,
                    window_max[f, b], random_key, first_window + b, freed,
                )  # fmt: skip
                pending[f, freed] = b
                worst_random[bin_] = _sort_key(bin_, key[f, last], window[f, last])
        if not quantiles:
            continue
        if rebin[f]:
            _rebin(value, key, window, row, f, end, quantiles, per_quantile, top, False)
        worst_in_bin = np.empty(quantiles + 1, dtype=np.float64)
        for bin_ in range(1, quantiles + 1):
            last = end + bin_ * per_quantile - 1
            worst_in_bin[bin_] = _sort_key(bin_, key[f, last], window[f, last])
        for b in range(batch):
            v = window_max[f, b]
            if not v > 0:
                continue
            bin_ = _quantile_bin(v, top, quantiles)
            quantile_key = _random_key(quantile_base, f, first_window + b)
            if not _sort_key(bin_, quantile_key, 0) < worst_in_bin[bin_]:
                continue
            bin_start = end + (bin_ - 1) * per_quantile
            last = bin_start + per_quantile - 1
            freed = row[f, last]
            _insert(value, key, window, row, f, bin_start, last + 1, bin_, v, quantile_key, first_window + b, freed)
            pending[f, freed] = b
            worst_in_bin[bin_] = _sort_key(bin_, key[f, last], window[f, last])


@njit(cache=True, parallel=True, fastmath={"reassoc", "contract"})  # reassociation lets the sums vectorise
def window_stats(acts, bits, window_max, act_sum, token_histogram, cutoff, offset):  # type: ignore[no-untyped-def]
    """One read of acts [batch, tokens, width] (and `bits`, the same array viewed as int32): writes
    window_max[offset + f, b], adds each feature's sum into act_sum[offset + f] and counts every
    token into token_histogram[offset + f] (the bins of `autointerp.collect.histogram.token_bins`,
    those below cutoff[offset + f] as bin 0)."""
    batch, tokens, width = acts.shape
    block = 256  # features per parallel task: a few KiB of accumulators, contiguous reads
    last_bin = token_histogram.shape[1] - 1
    for task in prange((width + block - 1) // block):
        lo = task * block
        n = min(lo + block, width) - lo
        total = np.zeros(n, dtype=np.float32)
        below = np.zeros(n, dtype=np.int32)  # tokens counted in bin 0, added once at the end
        bin_ = np.empty(n, dtype=np.int32)
        counted = np.empty(n, dtype=np.int32)  # features whose token this step lands above bin 0
        lowest = cutoff[offset + lo : offset + lo + n].copy()
        for b in range(batch):
            peak = np.full(n, -np.inf, dtype=np.float32)
            for t in range(tokens):
                row, row_bits = acts[b, t, lo : lo + n], bits[b, t, lo : lo + n]
                for j in range(n):  # vectorised: no scattered writes in this loop
                    x = row[j]
                    peak[j] = x if x > peak[j] else peak[j]
                    total[j] += x
                    code = min(max((row_bits[j] >> _BIN_SHIFT) - _CODE_OFFSET, 1), last_bin)
                    bin_[j] = code if x > 0 and code >= lowest[j] else 0
                    below[j] += bin_[j] == 0
                # a branch-free list of the few features above bin 0, then one scattered write each
                m = 0
                for j in range(n):
                    counted[m] = j
                    m += bin_[j] != 0
                for i in range(m):
                    j = counted[i]
                    token_histogram[offset + lo + j, bin_[j]] += 1
            for j in range(n):
                window_max[offset + lo + j, b] = peak[j]
        for j in range(n):
            act_sum[offset + lo + j] += total[j]
            token_histogram[offset + lo + j, 0] += below[j]


@njit(cache=True, parallel=True)
def copy_pending(pool, pending, acts, offset):  # type: ignore[no-untyped-def]
    """Copies the per-token activations of the new items of chunk acts [batch, tokens, width] (features
    offset.. of the sampler) into their pool rows: pool[offset + f, r] = acts[pending[offset + f, r], :, f];
    resets those pending entries to -1."""
    _, tokens, width = acts.shape
    for f in prange(width):
        for r in range(pending.shape[1]):
            b = pending[offset + f, r]
            if b >= 0:
                for t in range(tokens):
                    pool[offset + f, r, t] = acts[b, t, f]
                pending[offset + f, r] = -1


def merge_on_cpu(
    state: dict[str, torch.Tensor],
    window_max: torch.Tensor,
    rebin: torch.Tensor,
    plan: tuple[int, int, int, int],
    seed: int,
    first_window: int,
) -> None:
    """Merges a batch into the CPU tensors `state` in place; state["pending"] (all -1 before) gets, for the
    pool row of every new item, its batch row (`copy_pending` copies their activations and resets it).
    `rebin`: the features whose max's power-of-two top rose with the batch (`merge_batch`)."""
    top_k, random_windows, quantiles, per_quantile = plan
    arrays: list[Any] = [state[n].numpy() for n in ("value", "key", "window", "row", "pending", "histogram", "edges")]
    arrays += [window_max.numpy(), key_base(seed, 0), key_base(seed, 1), state["act_max"].numpy(), rebin.numpy()]
    merge_batch(*arrays, top_k, random_windows, quantiles, per_quantile, first_window)  # type: ignore[call-arg]
