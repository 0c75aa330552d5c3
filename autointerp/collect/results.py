"""What collection returns: per-feature statistics, kept exemplars, the sampling plan, and the
errors a stream can raise (a non-finite activation, an unusable checkpoint)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from autointerp.collect.keys import RANDOM_BINS
from autointerp.corpus.sources import Window
from autointerp.errors import AutointerpError

if TYPE_CHECKING:
    from autointerp.config import CollectConfig
    from autointerp.neighbours.cooccurrence import CooccurrenceLog

HISTOGRAM_EDGES: list[float] = [2.0**e for e in range(-6, 9)]
"""Upper edges of the window-max histogram: bin 0 holds max <= 0, bin i holds (edge[i-2], edge[i-1]]
(edge[-1] = 0), the last bin holds max > 256."""


KEPT_BINS_PER_QUANTILE = 4
"""Kept quantile bins per reported one. A reported bin of the final max (width max / Q) spans 2 to 4 kept
bins (width T / 4Q, T the max rounded up to a power of two) and draws on their items. With 2 (as before),
a random synthetic corpus left 52 of 240 reported bins with fewer windows than it had; with 4, 14 (8: 7),
for a third more slots per feature."""


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
    """Activation statistics of one feature over every token read (not a window's skipped first tokens)."""

    max_activation: float
    mean_activation: float
    density: float
    """Share of tokens that fire (activation >= FIRES_FRACTION x max; see `token_histogram.densities`)."""
    tokens: int
    """Tokens read."""
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
    cooccurrence: CooccurrenceLog | None = None
    """Neighbours hook: the windows that may fire, for co-occurrence neighbours (None: not counted)."""

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

    @classmethod
    def from_config(cls, config: CollectConfig) -> SamplingPlan:
        """Returns the plan the `collect` section sets (no quantile bins when `per_quantile` is 0): the one
        rule that a collection, its shards and their merge all follow."""
        quantiles = config.quantiles if config.per_quantile else 0
        return cls(config.top_k, config.random_windows, quantiles, config.per_quantile, config.seed)

    @property
    def kept_bins(self) -> int:
        """Returns how many quantile bins the sampler keeps: `KEPT_BINS_PER_QUANTILE` x `quantiles` (see
        `quantile_bin_top`)."""
        return KEPT_BINS_PER_QUANTILE * self.quantiles if self.per_quantile else 0

    @property
    def random_slots(self) -> int:
        """Returns the slots of the random reservoir: `random_windows` in each of its RANDOM_BINS bins."""
        return self.random_windows * RANDOM_BINS

    @property
    def reservoir_slots(self) -> int:
        """Returns the slots of the random reservoir plus the kept quantile bins."""
        return self.random_slots + self.kept_bins * self.per_quantile


def _kind_priority(kind: str) -> int:
    return 0 if kind == "top" else 2 if kind == "random" else 1


def distinct_windows(exemplars: list[Exemplar]) -> list[Exemplar]:
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


def renumber(exemplars: list[Exemplar]) -> list[Exemplar]:
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
