"""Streaming a corpus through a feature source into an `ExemplarSampler`, in batches, with checkpoints
that let an interrupted collection resume where it stopped (random keys depend only on the window
number, so a resumed run keeps exactly the exemplars of an uninterrupted one)."""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from autointerp.collect.results import CheckpointError, CollectionResult, SamplingPlan
from autointerp.collect.sampler import ExemplarSampler
from autointerp.corpus.sources import Window
from autointerp.neighbours.cooccurrence import DEFAULT_MAX_ENTRIES, CooccurrenceLog
from autointerp.progress import progress_bar

log = logging.getLogger(__name__)

ActivationFn = Callable[[torch.Tensor], torch.Tensor | list[torch.Tensor]]
"""Maps token ids [batch, tokens] to feature activations [batch, tokens, features], or to chunks
of them split on the feature axis (see `ExemplarSampler.update`)."""


def batches(windows: Iterable[Window], batch_size: int) -> Iterator[list[Window]]:
    batch: list[Window] = []
    for window in windows:
        batch.append(window)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def save_checkpoint(path: Path, fingerprint: str, sampler: ExemplarSampler) -> None:
    """Writes the state atomically (temporary file, then rename), so a kill leaves the last good one. Raises
    CheckpointError, in one line, when the disk has no room for it (nothing partial is left behind)."""
    staging = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"fingerprint": fingerprint, "state": sampler.state_dict()}, staging)
        os.replace(staging, path)
    except (OSError, RuntimeError) as exc:  # torch reports a failed write as RuntimeError
        staging.unlink(missing_ok=True)
        raise CheckpointError(
            f"cannot write the collection checkpoint {path}: {exc}; make room (or set collect.checkpoint_every = 0),"
            " then rerun the same command to resume"
        ) from None


def load_checkpoint(path: Path, fingerprint: str, sampler: ExemplarSampler) -> bool:
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


@dataclass(frozen=True)
class StreamOptions:
    """How a collection streams its windows: which features, in what batches on which device, with what
    progress and checkpoints (what to keep is the `SamplingPlan`)."""

    feature_indices: list[int]
    """The features' indices in their source, positionally aligned with the activations' last axis."""
    window_tokens: int
    batch_size: int
    """Windows per forward pass."""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    feature_names: Sequence[str] | None = None
    """Named in errors (default: `#<index>`)."""
    total_windows: int | None = None
    """For the progress bar (None: unknown)."""
    checkpoint: Path | None = None
    """Where the state is saved every `checkpoint_every` batches (None or 0: never) and resumed from."""
    checkpoint_every: int = 0
    fingerprint: str = ""
    """Names the collection a checkpoint belongs to; another one's is ignored."""
    cooccurrence_k: int = 0
    """Neighbours hook: log the windows that may fire, for this many co-occurrence neighbours (0: off)."""
    cooccurrence_entries: int = DEFAULT_MAX_ENTRIES
    """The co-occurrence log's cap (see `autointerp.neighbours.cooccurrence`)."""
    skipped_tokens: int = 0
    """Leading tokens of each window the source does not read (`FeatureSource.skipped_tokens`)."""


def collect_exemplars(
    windows: Iterable[Window], activation_fn: ActivationFn, plan: SamplingPlan, options: StreamOptions
) -> CollectionResult:
    """Returns stats and exemplars for each feature, streaming `windows` in batches.

    Raises NonFiniteActivationError, naming the feature (from `options.feature_names`, default its index)
    and the first offending window, as soon as a batch holds a NaN or infinite activation.

    With `options.checkpoint` and `checkpoint_every` > 0, the state is saved every that many batches and at the
    end of the stream, and a matching checkpoint is resumed from; the caller deletes the file once results are
    stored.
    """
    indices, device, checkpoint = options.feature_indices, options.device, options.checkpoint
    names = list(options.feature_names) if options.feature_names is not None else [f"#{i}" for i in indices]
    sampler = ExemplarSampler(len(indices), options.window_tokens, plan, device, options.skipped_tokens)
    sampler.feature_names = names
    if options.cooccurrence_k:  # neighbours hook
        sampler.cooccurrence = CooccurrenceLog(len(indices), options.cooccurrence_k, options.cooccurrence_entries)
    if checkpoint is not None and load_checkpoint(checkpoint, options.fingerprint, sampler):
        windows = itertools.islice(windows, sampler.windows_seen, None)
    unsaved = False  # batches merged since the last checkpoint
    with progress_bar("collect", total=options.total_windows, unit="windows") as advance:
        advance(sampler.windows_seen)
        for batch in batches(windows, options.batch_size):
            token_ids = torch.tensor([w.token_ids for w in batch], dtype=torch.long, device=device)  # (B, T)
            with torch.inference_mode():
                acts = activation_fn(token_ids)  # (B, T, F), or chunks of it on F
                sampler.update(acts, batch)
            advance(len(batch))
            unsaved = True
            if checkpoint is not None and options.checkpoint_every and sampler.batches % options.checkpoint_every == 0:
                save_checkpoint(checkpoint, options.fingerprint, sampler)
                unsaved = False
    if checkpoint is not None and options.checkpoint_every and unsaved:
        # the whole stream: a run stopped in what follows (the quiet-window pass, the write) does not read it again
        save_checkpoint(checkpoint, options.fingerprint, sampler)
    stats = sampler.stats()
    return CollectionResult(
        feature_indices=indices, stats=stats, exemplars=sampler.exemplars(stats), cooccurrence=sampler.cooccurrence
    )
