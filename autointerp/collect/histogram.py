"""Per-feature histograms of token activations, from which collection computes density at the end.

Whether a token fires depends on the feature's max over the whole corpus (`autointerp.activations`),
which a stream knows only at the end; so collection counts every token into fixed bins and the
density is read off the histogram once the max is known (`densities`).

The bins are those of the float32 bit pattern: a positive activation's exponent and the top
`SUB_BITS` bits of its mantissa, i.e. each octave [2^e, 2^(e+1)) split into 8 equal parts, for
2^MIN_EXPONENT <= a < 2^MAX_EXPONENT. Bin 0 holds a <= 0, bin 1 holds 0 < a < 2^MIN_EXPONENT and the
last bin holds a >= 2^MAX_EXPONENT. A token's bin is one shift of its bits (cheap in the collector's
inner loop) and depends on the value alone, so counts add: shards merge exactly, in any order.

Only the bins at and above the threshold of the final max are ever read, and the running max only
grows: so a token whose bin lies wholly below FIRES_FRACTION x the feature's max so far (`cutoff_bins`)
is counted in bin 0 instead of its own bin. The counts a density reads are then complete under any
split of the corpus (every shard's running max is at most the final max); what lies below differs
between splits but not in its total, and `fold_below` gives the form that any split agrees on. It keeps
the collector's scattered writes to the few bins near each feature's top (bin 0's are cache-hot).
"""

from __future__ import annotations

import math

import torch

from autointerp.activations import FIRES_FRACTION

SUB_BITS = 3
"""Mantissa bits per bin: each octave is split into 2**SUB_BITS equal bins."""

MIN_EXPONENT = -24
"""Activations below 2**MIN_EXPONENT (about 6e-8) share one bin with everything down to 0."""

MAX_EXPONENT = 24
"""Activations at or above 2**MAX_EXPONENT (about 1.7e7) share the last bin."""

TOKEN_BINS = 3 + (MAX_EXPONENT - MIN_EXPONENT) * (1 << SUB_BITS)
"""Bins per feature: a <= 0, the underflow bin, 8 per octave, the overflow bin."""

BIN_SHIFT = 23 - SUB_BITS
"""Right shift of a positive float32's bits that leaves its exponent and top SUB_BITS mantissa bits."""

CODE_OFFSET = ((MIN_EXPONENT + 127) << SUB_BITS) - 2
"""Subtracted from the shifted bits so that 2**MIN_EXPONENT lands in bin 2."""


def token_bins(acts: torch.Tensor, cutoff: torch.Tensor | None = None) -> torch.Tensor:
    """Returns the bin (int64, 0..TOKEN_BINS - 1) of every activation, any shape and float dtype; with
    `cutoff` (per feature, the last axis: `cutoff_bins`), bins below it are counted as bin 0."""
    values = acts.float().contiguous()
    code = ((values.view(torch.int32) >> BIN_SHIFT).long() - CODE_OFFSET).clamp(1, TOKEN_BINS - 1)
    counted = values > 0 if cutoff is None else (values > 0) & (code >= cutoff)
    return torch.where(counted, code, 0)


def cutoff_bins(max_activation: torch.Tensor) -> torch.Tensor:
    """Returns, per feature, the lowest bin counted as itself (int32, >= 1) under a max so far: the bin
    below the one holding FIRES_FRACTION x max (one bin of slack for rounding). Every bin below it lies
    under the threshold of any larger max, so no density ever reads it (see the module docstring)."""
    threshold = FIRES_FRACTION * max_activation.double().cpu().clamp(min=0)
    index = torch.bucketize(threshold, _LOWER, right=True)  # the bin holding the threshold
    return (index - 1).clamp(min=1).to(dtype=torch.int32, device=max_activation.device)


def fold_below(histogram: torch.Tensor, max_activation: torch.Tensor) -> torch.Tensor:
    """Returns a copy of histogram [features, TOKEN_BINS] with every bin below `cutoff_bins(max)` added
    into bin 0: the same counts whatever split of the corpus (and running maxima) produced them."""
    below = torch.arange(TOKEN_BINS, device=histogram.device) < cutoff_bins(max_activation).unsqueeze(1)
    folded = torch.where(below, 0, histogram)
    folded[:, 0] += torch.where(below, histogram, 0).sum(dim=1)
    return folded


def add_to_histogram(
    histogram: torch.Tensor, chunk: torch.Tensor, first_feature: int, cutoff: torch.Tensor | None = None
) -> None:
    """Adds the tokens of chunk [batch, tokens, width] to histogram[first_feature : first_feature + width],
    bins below `cutoff` [width] (`cutoff_bins`) as bin 0."""
    width = chunk.shape[-1]
    index = token_bins(chunk, cutoff).reshape(-1, width) + torch.arange(width, device=chunk.device) * TOKEN_BINS
    counts = torch.bincount(index.flatten(), minlength=width * TOKEN_BINS)
    histogram[first_feature : first_feature + width] += counts.view(width, TOKEN_BINS)


def _bin_range(index: int) -> tuple[float, float]:
    """Returns [lower, upper) of a bin above the a <= 0 bin (the last bin's upper is inf)."""
    if index == 1:
        return 0.0, 2.0**MIN_EXPONENT
    if index == TOKEN_BINS - 1:
        return 2.0**MAX_EXPONENT, math.inf
    code = index + CODE_OFFSET
    step = 2.0 ** ((code >> SUB_BITS) - 127 - SUB_BITS)
    lower = 2.0 ** ((code >> SUB_BITS) - 127) + (code & ((1 << SUB_BITS) - 1)) * step
    return lower, lower + step


_LOWER, _UPPER = torch.tensor([_bin_range(i) for i in range(1, TOKEN_BINS)], dtype=torch.float64).T.contiguous()
"""Lower and upper edges of bins 1..TOKEN_BINS - 1 (the last upper is inf)."""


def bin_of(value: float) -> int:
    """Returns the bin of one activation (what `token_bins` gives for it as a float32)."""
    if not value > 0:
        return 0
    return int(torch.bucketize(torch.tensor(value, dtype=torch.float64), _LOWER, right=True))


def densities(histogram: torch.Tensor, max_activation: torch.Tensor) -> torch.Tensor:
    """Returns each feature's share of tokens that fire (activation >= FIRES_FRACTION x max), float64,
    from histogram [features, TOKEN_BINS] and max [features].

    Bins above the threshold t count whole; the bin holding t counts the share of its width above t
    (linear interpolation). Precision: each result lies between the exact shares at thresholds 8/9 t
    and 9/8 t (a bin spans at most a factor 9/8), so it differs from the exact density by at most
    that bin's count / tokens; this holds for maxima between about 6e-7 and 1.7e8, where t falls in
    a regular bin. A feature whose max is <= 0, or with no tokens, has density 0.
    """
    counts = histogram.double().cpu()
    peak = max_activation.double().cpu()
    tokens = counts.sum(dim=1)
    threshold = FIRES_FRACTION * peak.clamp(min=0)
    index = torch.bucketize(threshold, _LOWER, right=True).clamp(1, TOKEN_BINS - 1)
    lower, upper = _LOWER[index - 1], _UPPER[index - 1]
    upper = torch.minimum(upper, torch.maximum(peak, lower))  # no value in the last bin exceeds the max
    width = upper - lower
    inside = torch.where(width > 0, (upper - threshold) / width.clamp(min=1e-300), 1.0).clamp(0.0, 1.0)
    at_or_above = counts.flip(1).cumsum(dim=1).flip(1)  # at_or_above[:, i]: tokens in bins >= i
    above = at_or_above.gather(1, (index + 1).clamp(max=TOKEN_BINS - 1).unsqueeze(1)).squeeze(1)
    above = torch.where(index + 1 < TOKEN_BINS, above, 0.0)
    share = (above + counts.gather(1, index.unsqueeze(1)).squeeze(1) * inside) / tokens.clamp(min=1)
    return torch.where((peak > 0) & (tokens > 0), share, 0.0)
