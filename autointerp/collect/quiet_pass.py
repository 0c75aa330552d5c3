"""A second pass over the corpus for the features that came back short of non-activating windows.

The stream's random reservoir (`autointerp.collect.sampler`) cannot know the final max, so in the bins
around the firing threshold quiet windows compete with firing ones for the slots; a dense feature (most
windows fire) can then report fewer quiet windows than the corpus holds, even none. Once the max is known
the choice is easy: this pass reads the corpus again (the run's whole source, keeping those features' columns)
and keeps, per feature, the `random_windows` quiet windows (max below 10 % of the feature's max) with the
smallest random keys, the same keys the stream uses (`random_keys`, stream 0): the exact random sample of its
quiet windows. What it keeps depends only on the corpus and the window numbers, so a sharded run (whose
shards each pass their own windows, `QuietPick.merged` joining their picks) and a single process keep the
same windows. Only the window maxima and keys of a batch are compared; the per-token activations of a window
are copied when it is kept.

A feature is passed again only when its window-max histogram (fixed bins over the whole corpus) allows
more quiet windows than were reported, so a feature that fires in every window costs nothing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from autointerp.activations import fires_threshold
from autointerp.collect.keys import random_keys
from autointerp.collect.results import HISTOGRAM_EDGES, CollectionResult, Exemplar, SamplingPlan
from autointerp.collect.stream import batches
from autointerp.corpus.sources import Window
from autointerp.progress import progress_bar

log = logging.getLogger(__name__)

ActivationChunks = Callable[[torch.Tensor], torch.Tensor | Sequence[torch.Tensor]]
"""Token ids [batch, tokens] -> activations [batch, tokens, features], or chunks of it on features."""


def quiet_window_bound(histogram: Sequence[int], max_activation: float) -> int:
    """Returns how many windows may be quiet (max below 10 % of `max_activation`) by a feature's histogram of
    window maxima (`HISTOGRAM_EDGES`; bin 0: maxima <= 0, bin b: (edges[b-2], edges[b-1]]): the windows of
    every bin whose lower edge is under the threshold."""
    threshold = fires_threshold(max_activation)
    lower = [-math.inf, 0.0, *HISTOGRAM_EDGES]
    return sum(count for count, edge in zip(histogram, lower, strict=False) if edge < threshold)


def features_short_of_quiet(result: CollectionResult, plan: SamplingPlan) -> list[int]:
    """Returns the positions of the live features that kept fewer than `random_windows` quiet windows while
    their histogram allows more."""
    quiet = [count for _, count in result.window_counts()]
    return [
        f
        for f, stats in enumerate(result.stats)
        if not stats.dead
        and quiet[f] < plan.random_windows
        and quiet_window_bound(stats.histogram, stats.max_activation) > quiet[f]
    ]


class QuietPick:
    """Per feature short of quiet windows, the `wanted` quiet windows with the smallest random keys among the
    windows seen so far: one pass over the corpus, or over a shard's range of it (`merged` joins the shards')."""

    def __init__(self, features: list[int], thresholds: list[float], wanted: int, seed: int, device: torch.device):
        """`features`: positions of the features in the run's source; `thresholds`: each one's firing level
        (`fires_threshold` of its max over the whole corpus)."""
        self.features, self.thresholds, self.wanted, self.seed = list(features), list(thresholds), wanted, seed
        self.device = device
        count = len(self.features)
        self.columns = torch.tensor(self.features, dtype=torch.long, device=device)
        # float64, as the stream compares window maxima with FIRES_FRACTION x max
        self._threshold = torch.tensor(self.thresholds, dtype=torch.float64, device=device).unsqueeze(1)
        self.keys = torch.full((count, wanted), math.inf, device=device)
        self.numbers = torch.full((count, wanted), -1, dtype=torch.long, device=device)
        self.acts: torch.Tensor | None = None  # [count, wanted, tokens], once a batch gives the window length
        self.windows: dict[int, Window] = {}
        self.windows_seen = 0

    def update(self, activations: torch.Tensor | Sequence[torch.Tensor], batch: list[Window], first: int) -> None:
        """Takes a batch of windows numbered `first`.. in the corpus and their activations [batch, tokens,
        features of the run] (or chunks of them on the feature axis)."""
        acts = _columns(activations, self.columns)  # [batch, tokens, count]
        keys = random_keys(self.seed, 0, 0, first, len(batch), self.device, features=self.columns)  # [count, batch]
        keys = torch.where(acts.amax(dim=1).T.double() < self._threshold, keys, math.inf)
        numbers = torch.arange(first, first + len(batch), device=self.device).expand(len(self.features), -1)
        self._keep(keys, numbers, acts.permute(2, 0, 1), {first + i: w for i, w in enumerate(batch)})
        self.windows_seen += len(batch)

    def _keep(self, keys: torch.Tensor, numbers: torch.Tensor, acts: torch.Tensor, windows: dict[int, Window]) -> None:
        """Keeps the smallest keys of what is kept and the candidates (keys and window numbers [count, n], their
        activations [count, n, tokens]); equal keys by window number, the order the stream's reservoir reports in."""
        if self.acts is None:
            self.acts = torch.zeros((len(self.features), self.wanted, acts.shape[-1]), device=self.device)
        all_keys, all_numbers = torch.cat([self.keys, keys], dim=1), torch.cat([self.numbers, numbers], dim=1)
        by_number = all_numbers.argsort(dim=1, stable=True)
        order = by_number.gather(1, all_keys.gather(1, by_number).argsort(dim=1, stable=True))[:, : self.wanted]
        self.keys, self.numbers = all_keys.gather(1, order), all_numbers.gather(1, order)
        # per-token activations: the kept ones stay, the candidates' newly kept ones are copied
        rows = torch.arange(len(self.features), device=self.device).unsqueeze(1)
        chosen = self.acts[rows, order.clamp(max=self.wanted - 1)]
        new_row, new_slot = (order >= self.wanted).nonzero(as_tuple=True)
        chosen[new_row, new_slot] = acts[new_row, order[new_row, new_slot] - self.wanted].float()
        self.acts = chosen
        still = set(self.numbers[self.keys < math.inf].tolist())
        self.windows = {n: w for n, w in (self.windows | windows).items() if n in still}

    def state_dict(self) -> dict[str, Any]:
        """Returns the pick as tensors and plain lists (what a shard hands its parent)."""
        return {
            "features": self.features,
            "thresholds": self.thresholds,
            "wanted": self.wanted,
            "seed": self.seed,
            "keys": self.keys.cpu(),
            "numbers": self.numbers.cpu(),
            "acts": None if self.acts is None else self.acts.cpu(),
            "windows": [(n, w.doc_id, w.offset, w.token_ids) for n, w in self.windows.items()],
            "windows_seen": self.windows_seen,
        }

    @classmethod
    def merged(cls, states: Sequence[dict[str, Any]], device: torch.device) -> QuietPick:
        """Returns the pick of the windows of every state (shards' picks of one feature list): the same as
        one pass over all their windows."""
        first = states[0]
        pick = cls(first["features"], first["thresholds"], first["wanted"], first["seed"], device)
        for state in states:
            if state["features"] != pick.features or state["thresholds"] != pick.thresholds:
                raise ValueError("shards' quiet-window picks are of different features")
            pick.windows_seen += state["windows_seen"]
            if state["acts"] is None:  # a shard of no windows
                continue
            windows = {n: Window(doc_id=d, offset=o, token_ids=list(t)) for n, d, o, t in state["windows"]}
            pick._keep(state["keys"].to(device), state["numbers"].to(device), state["acts"].to(device), windows)
        return pick

    def apply(self, result: CollectionResult) -> list[int]:
        """Puts the picked windows in `result` in place of the quiet windows the stream kept for these features;
        returns their positions, or nothing (and leaves `result` as it was) when the pick read another number of
        windows than the result was collected from."""
        collected = sum(result.stats[self.features[0]].histogram)  # every window the stream saw, once per feature
        if self.windows_seen != collected:
            log.warning(
                "collect: the corpus read back %d windows, not the %d collected; non-firing windows kept as streamed",
                self.windows_seen,
                collected,
            )
            return []
        chosen: list[Exemplar] = []
        keys, numbers = self.keys.tolist(), self.numbers.tolist()
        acts = [] if self.acts is None else self.acts.cpu().tolist()
        for row, f in enumerate(self.features):
            for rank in range(self.wanted):
                if keys[row][rank] < math.inf:
                    chosen.append(
                        Exemplar(f, "random", rank, self.windows[numbers[row][rank]], acts[row][rank], "score")
                    )
        passed = set(self.features)
        result.exemplars = [e for e in result.exemplars if not (e.kind == "random" and e.feature_index in passed)]
        result.exemplars.extend(chosen)
        return list(self.features)


def quiet_pick_for(result: CollectionResult, plan: SamplingPlan, device: torch.device) -> QuietPick | None:
    """Returns an empty pick for the features of `result` short of quiet windows, None when none is."""
    short = features_short_of_quiet(result, plan)
    if not short:
        return None
    thresholds = [fires_threshold(result.stats[f].max_activation) for f in short]
    return QuietPick(short, thresholds, plan.random_windows, plan.seed, device)


def refill_quiet_windows(
    result: CollectionResult,
    windows: Iterable[Window],
    activations: ActivationChunks,
    plan: SamplingPlan,
    batch_size: int,
    device: torch.device,
    total_windows: int | None = None,
) -> list[int]:
    """Chooses again, in one more pass over `windows` (the corpus the result was collected from, in the same
    order), the non-activating windows of the features short of them, and puts them in `result` in place of
    those the stream kept. Returns the positions of the features it passed over (empty: no pass, or a corpus that
    read back another number of windows than were collected, which leaves `result` as it was)."""
    pick = quiet_pick_for(result, plan, device)
    if pick is None:
        return []
    log.info("collect: a second pass over the corpus for %d features short of non-firing windows", len(pick.features))
    with progress_bar("quiet windows", total=total_windows, unit="windows") as advance:
        for batch in batches(windows, batch_size):
            ids = torch.tensor([w.token_ids for w in batch], dtype=torch.long, device=device)
            with torch.inference_mode():
                pick.update(activations(ids), batch, pick.windows_seen)
            advance(len(batch))
    return pick.apply(result)


def _columns(acts: torch.Tensor | Sequence[torch.Tensor], columns: torch.Tensor) -> torch.Tensor:
    """Returns the `columns` (feature positions) of activations given whole or as chunks on the feature axis."""
    if isinstance(acts, torch.Tensor):
        return acts.index_select(-1, columns.to(acts.device))
    parts, offset = [], 0
    for chunk in acts:
        width = chunk.shape[-1]
        inside = columns[(columns >= offset) & (columns < offset + width)] - offset
        if len(inside):
            parts.append(chunk.index_select(-1, inside.to(chunk.device)).float())
        offset += width
    return torch.cat(parts, dim=-1)
