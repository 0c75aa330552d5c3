"""Random keys and reservoir bins of the streaming sampler (see `autointerp.collect.sampler`).

Every (window, feature) gets a uniform key that is a hash of (seed, stream, feature, window number)
only, so any split of the corpus into shards or batches gives it the same key. Reservoir bins are
relative to T, each feature's max rounded up to a power of two: the random reservoir's quiet bin and
octaves (`random_bin`), the quantile bins (`quantile_bin_top`). Sort keys within a bin are bin + key/2.
"""

from __future__ import annotations

import torch

QUIET_LEVELS = 5
"""Octave bins of the random reservoir above its quiet bin: (T/32, T/16], ..., (T/2, T]."""
RANDOM_BINS = QUIET_LEVELS + 1
"""Bins of the random reservoir: quiet (<= T/32, T the max's power-of-two top) and the octaves up to T."""

EMPTY_KEY = 0.95  # an empty slot's offset in its bin: loses against every real item (< 0.5)

KEY_BITS = 24  # keys are multiples of 2**-24 in [0, 1), exact in float32
MIX = (0xBF58476D1CE4E5B9, 0x94D049BB133111EB)  # splitmix64's multipliers
STEP = (0x9E3779B97F4A7C15, 0xD6E8FEB86659FD93, 0xA0761D6478BD642F)


def _signed(value: int) -> int:
    """Returns a 64-bit pattern as the int64 that holds it."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def random_keys(
    seed: int,
    stream: int,
    n_features: int,
    first: int,
    batch: int,
    device: torch.device,
    features: torch.Tensor | None = None,
) -> torch.Tensor:
    """Returns keys [features, batch] in [0, 1) for windows first..first + batch - 1: a hash (splitmix64)
    of (seed, stream, feature, window number) only, so any split of the corpus into shards or batches
    gives every (feature, window) the same key; the reservoirs keep the smallest keys. `features`: the
    feature positions to hash (default: all `n_features`)."""
    if features is None:
        features = torch.arange(n_features)
    feature = features.to(device=device, dtype=torch.int64).unsqueeze(1)
    window = torch.arange(first, first + batch, dtype=torch.int64, device=device).unsqueeze(0)
    x = feature * _signed(STEP[0]) + window * _signed(STEP[1]) + _signed((seed * 2 + stream) * STEP[2])
    for bits, multiplier in ((30, MIX[0]), (27, MIX[1])):
        x = (x ^ _shift_right(x, bits)) * _signed(multiplier)
    x = x ^ _shift_right(x, 31)
    return _shift_right(x, 64 - KEY_BITS).float() / float(1 << KEY_BITS)


def quantile_bin_top(feature_max: torch.Tensor) -> torch.Tensor:
    """Returns the top of the kept quantile bins: each feature's max rounded up to a power of two.

    It changes only when the max doubles, and then each new bin is the union of two old ones, whose
    kept items (smallest keys) hold the new bin's smallest keys: so the kept bins are a function of
    the set of windows seen, not of their order, and shards merge exactly. `KEPT_BINS_PER_QUANTILE`
    x `quantiles` bins are kept so that every bin of the final max (what `exemplars` reports) has kept
    items to draw from.
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


def bin_sort_key(bin_: torch.Tensor | int, key: torch.Tensor) -> torch.Tensor:
    """Sort keys (float64, exact) in a reservoir bin: bin + key / 2."""
    return bin_ + 0.5 * key.double()
