"""A second pass over the corpus for the features that came back short of non-activating windows.

The stream's random reservoir (`autointerp.collect.sampler`) cannot know the final max, so in the bins
around the firing threshold quiet windows compete with firing ones for the slots; a dense feature (most
windows fire) can then report fewer quiet windows than the corpus holds, even none. Once the max is known
the choice is easy: this pass reads the corpus again (the run's whole source, keeping those features' columns)
and keeps, per feature, the `random_windows` quiet windows (max below 10 % of the feature's max) with the
smallest random keys, the same keys the stream uses (`random_keys`, stream 0): the exact random sample of its
quiet windows. What it keeps depends only on the corpus, so a sharded run (which makes this pass in the
process that merges the shards) and a single process keep the same windows. Only the window maxima and keys
of a batch are compared; the per-token activations of a window are copied when it is kept.

A feature is passed again only when its window-max histogram (fixed bins over the whole corpus) allows
more quiet windows than were reported, so a feature that fires in every window costs nothing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence

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
    short = features_short_of_quiet(result, plan)
    if not short:
        return []
    log.info("collect: a second pass over the corpus for %d features short of non-firing windows", len(short))
    count, wanted = len(short), plan.random_windows
    columns = torch.tensor(short, dtype=torch.long, device=device)
    # float64, as the stream compares window maxima with FIRES_FRACTION x max
    thresholds = torch.tensor(
        [fires_threshold(result.stats[f].max_activation) for f in short], dtype=torch.float64, device=device
    ).unsqueeze(1)
    kept_key = torch.full((count, wanted), math.inf, device=device)
    kept_window = torch.full((count, wanted), -1, dtype=torch.long, device=device)
    kept_acts: torch.Tensor | None = None  # [count, wanted, tokens], once the first batch gives the window length
    rows = torch.arange(count, device=device).unsqueeze(1)
    seen: dict[int, Window] = {}
    first = 0
    with progress_bar("quiet windows", total=total_windows, unit="windows") as advance:
        for batch in batches(windows, batch_size):
            ids = torch.tensor([w.token_ids for w in batch], dtype=torch.long, device=device)
            with torch.inference_mode():
                acts = _columns(activations(ids), columns)  # [batch, tokens, count]
            if kept_acts is None:
                kept_acts = torch.zeros((count, wanted, acts.shape[1]), device=device)
            keys = random_keys(plan.seed, 0, 0, first, len(batch), device, features=columns)  # [count, batch]
            keys = torch.where(acts.amax(dim=1).T.double() < thresholds, keys, math.inf)
            number = torch.arange(first, first + len(batch), device=device).expand(count, -1)
            all_keys, all_windows = torch.cat([kept_key, keys], dim=1), torch.cat([kept_window, number], dim=1)
            # the smallest keys, equal keys by window number: the order the stream's reservoir reports in
            by_window = all_windows.argsort(dim=1, stable=True)
            order = by_window.gather(1, all_keys.gather(1, by_window).argsort(dim=1, stable=True))[:, :wanted]
            kept_key, kept_window = all_keys.gather(1, order), all_windows.gather(1, order)
            # per-token activations: the kept ones stay, the batch's newly kept ones are read from it
            chosen_acts = kept_acts[rows, order.clamp(max=wanted - 1)]
            new_row, new_slot = (order >= wanted).nonzero(as_tuple=True)
            chosen_acts[new_row, new_slot] = acts[order[new_row, new_slot] - wanted, :, new_row].float()
            kept_acts = chosen_acts
            for offset, window in enumerate(batch):
                seen[first + offset] = window
            still = set(kept_window[kept_key < math.inf].tolist())
            seen = {n: window for n, window in seen.items() if n in still}
            first += len(batch)
            advance(len(batch))
    collected = sum(result.stats[short[0]].histogram)  # every window the stream saw, once per feature
    if first != collected:
        log.warning(
            "collect: the corpus read back %d windows, not the %d collected; non-firing windows kept as streamed",
            first,
            collected,
        )
        return []
    chosen: list[Exemplar] = []
    keys_list, windows_list = kept_key.tolist(), kept_window.tolist()
    acts_list = [] if kept_acts is None else kept_acts.cpu().tolist()
    for row, f in enumerate(short):
        for rank in range(wanted):
            if keys_list[row][rank] < math.inf:
                window = seen[windows_list[row][rank]]
                chosen.append(Exemplar(f, "random", rank, window, acts_list[row][rank], "score"))
    passed = set(short)
    result.exemplars = [e for e in result.exemplars if not (e.kind == "random" and e.feature_index in passed)]
    result.exemplars.extend(chosen)
    return short


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
