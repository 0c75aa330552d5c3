"""Observe: stream the corpus through the subject model and keep, per feature, what sampling needs.

Memory is bounded by k x features x window length: a top-k of windows ranked by their
maximum activation, and one reservoir of random windows shared by all features. Nothing
else of the corpus's activations is kept.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch

from autointerp.corpus import Window
from autointerp.progress import progress_bar

log = logging.getLogger(__name__)

ActivationFn = Callable[[torch.Tensor], torch.Tensor]
"""Maps token ids [batch, tokens] to feature activations [batch, tokens, features]."""


@dataclass
class FeatureStats:
    """Activation statistics of one feature over every token seen."""

    max_activation: float
    mean_activation: float
    density: float
    tokens: int

    @property
    def dead(self) -> bool:
        """True when the feature never had a positive activation."""
        return self.max_activation <= 0.0


@dataclass
class Exemplar:
    """One kept window of one feature, with that feature's per-token activations."""

    feature_index: int
    kind: str  # "top" or "random"
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


class TopWindowTracker:
    """Keeps the k windows with the highest maximum activation per feature, on the model's device."""

    def __init__(self, n_features: int, k: int, window_tokens: int, device: torch.device) -> None:
        self.k = k
        self.values = torch.full((n_features, k), float("-inf"), device=device)
        self.token_ids = torch.zeros((n_features, k, window_tokens), dtype=torch.long, device=device)
        self.activations = torch.zeros((n_features, k, window_tokens), device=device)
        self.positions = torch.full((n_features, k, 2), -1, dtype=torch.long, device=device)

    def update(self, activations: torch.Tensor, token_ids: torch.Tensor, positions: torch.Tensor) -> None:
        """Merges a batch: activations [batch, tokens, features], token_ids [batch, tokens],
        positions [batch, 2] holding each window's (document id, token offset)."""
        n_features, batch = self.values.shape[0], activations.shape[0]
        per_feature = activations.permute(2, 0, 1)  # [features, batch, tokens]
        candidates = torch.cat([self.values, per_feature.amax(dim=2)], dim=1)
        top_values, top_positions = candidates.topk(self.k, dim=1)
        all_acts = torch.cat([self.activations, per_feature], dim=1)
        all_ids = torch.cat([self.token_ids, token_ids.unsqueeze(0).expand(n_features, batch, -1)], dim=1)
        all_positions = torch.cat([self.positions, positions.unsqueeze(0).expand(n_features, batch, 2)], dim=1)
        gather_tokens = top_positions.unsqueeze(-1).expand(-1, -1, all_acts.shape[2])
        self.values = top_values
        self.activations = all_acts.gather(1, gather_tokens)
        self.token_ids = all_ids.gather(1, gather_tokens)
        self.positions = all_positions.gather(1, top_positions.unsqueeze(-1).expand(-1, -1, 2))


class RandomWindowReservoir:
    """Reservoir sample (algorithm R) of windows with every feature's activations."""

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.rng = random.Random(seed)
        self.seen = 0
        self.items: list[tuple[Window, torch.Tensor]] = []

    def offer(self, window: Window, activations: torch.Tensor) -> None:
        """Considers one window; activations is [tokens, features] on the CPU."""
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append((window, activations))
            return
        slot = self.rng.randrange(self.seen)
        if slot < self.size:
            self.items[slot] = (window, activations)


def _batches(windows: Iterable[Window], batch_size: int) -> Iterator[list[Window]]:
    batch: list[Window] = []
    for window in windows:
        batch.append(window)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


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
    total_windows: int | None = None,
) -> CollectionResult:
    """Returns stats and exemplars for each feature, streaming `windows` in batches."""
    n_features = len(feature_indices)
    tracker = TopWindowTracker(n_features, top_k, window_tokens, device)
    reservoir = RandomWindowReservoir(random_windows, seed)
    act_sum = torch.zeros(n_features, dtype=torch.float64, device=device)
    act_max = torch.full((n_features,), float("-inf"), device=device)
    active = torch.zeros(n_features, dtype=torch.long, device=device)
    tokens = 0
    with progress_bar("collect", total=total_windows, unit="windows") as advance:
        for batch in _batches(windows, batch_size):
            token_ids = torch.tensor([w.token_ids for w in batch], dtype=torch.long, device=device)
            acts = activation_fn(token_ids)  # [batch, tokens, features]
            positions = torch.tensor([[w.doc_id, w.offset] for w in batch], dtype=torch.long, device=device)
            tracker.update(acts, token_ids, positions)
            act_sum += acts.sum(dim=(0, 1), dtype=torch.float64)
            act_max = torch.maximum(act_max, acts.amax(dim=(0, 1)))
            active += (acts > 0).sum(dim=(0, 1))
            tokens += acts.shape[0] * acts.shape[1]
            cpu_acts = acts.cpu()
            for row, window in enumerate(batch):
                reservoir.offer(window, cpu_acts[row])
            advance(len(batch))
    stats = [
        FeatureStats(
            max_activation=float(act_max[f]),
            mean_activation=float(act_sum[f] / max(tokens, 1)),
            density=float(active[f]) / max(tokens, 1),
            tokens=tokens,
        )
        for f in range(n_features)
    ]
    result = CollectionResult(feature_indices=feature_indices, stats=stats)
    top_positions = tracker.positions.cpu().tolist()
    top_tokens = tracker.token_ids.cpu().tolist()
    top_acts = tracker.activations.cpu().tolist()
    for f in range(n_features):
        if stats[f].dead:
            continue
        for rank in range(top_k):
            doc_id, offset = top_positions[f][rank]
            if doc_id < 0:  # fewer windows in the corpus than top_k
                continue
            window = Window(doc_id=doc_id, offset=offset, token_ids=top_tokens[f][rank])
            split = "explain" if rank % 2 == 0 else "score"
            result.exemplars.append(Exemplar(f, "top", rank, window, top_acts[f][rank], split))
        for rank, (window, acts) in enumerate(reservoir.items):
            result.exemplars.append(Exemplar(f, "random", rank, window, acts[:, f].tolist(), "score"))
    return result
