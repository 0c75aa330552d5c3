"""Observe stage: collect exemplars and statistics for the run's features."""

from __future__ import annotations

import logging
from pathlib import Path

from autointerp.collect.exemplar_table import exemplar_table
from autointerp.collect.quiet_pass import refill_quiet_windows
from autointerp.collect.results import CollectionResult, SamplingPlan
from autointerp.collect.stream import StreamOptions, collect_exemplars
from autointerp.config import CollectConfig, RunConfig
from autointerp.corpus.sources import CorpusStats, corpus_windows
from autointerp.pipeline.common import load_subject
from autointerp.store.database import Store
from autointerp.subject import SubjectModel
from autointerp.subject.kinds import build_feature_source
from autointerp.subject.sources import FeatureSource

log = logging.getLogger(__name__)


def choose_neurons(config: RunConfig, subject: SubjectModel) -> list[int]:
    """Returns the indices of the configured features (checked against the model)."""
    return build_feature_source(config.features, subject).indices


def checkpoint_path(config: RunConfig, run_id: str) -> Path:
    """Returns where an unfinished collection of `run_id` keeps its checkpoint."""
    return config.store.path.parent / "checkpoints" / f"{run_id}.collect.pt"


def _model_name(source: FeatureSource, subject: SubjectModel) -> str:
    return "planted" if source.kind == "planted" else subject.slug


def run_collect(config: RunConfig, store: Store, run_id: str) -> int:
    """Observe: collects exemplars and stats; returns the number of features stored.

    A finished collection is skipped; an interrupted one resumes from its checkpoint.
    """
    if store.has_features(run_id):
        log.info("collection of %s already stored; skipping", run_id)
        return len(store.features(run_id))
    subject = load_subject(config)
    source = build_feature_source(config.features, subject)
    corpus, collect = config.corpus, config.collect
    corpus_stats = CorpusStats()
    windows = corpus_windows(subject.tokenizer, corpus, corpus_stats)
    checkpoint = checkpoint_path(config, run_id)
    options = StreamOptions(
        feature_indices=source.indices,
        window_tokens=corpus.window_tokens,
        batch_size=corpus.batch_size,
        device=subject.device,
        feature_names=source.feature_ids,
        total_windows=corpus.max_windows,
        checkpoint=checkpoint if collect.checkpoint_every else None,
        checkpoint_every=collect.checkpoint_every,
        fingerprint=f"{run_id}:{config.config_hash()}",
        cooccurrence_k=config.neighbours.k if config.neighbours.enabled else 0,
        cooccurrence_entries=config.neighbours.max_cooccurrence_entries,
        skipped_tokens=source.skipped_tokens,
    )
    result = collect_exemplars(windows, source.activation_chunks, SamplingPlan.from_config(collect), options)
    log.info("corpus: %s", corpus_stats)
    if collect.quiet_pass:
        refill_from_corpus(config, subject, source, result)
    store_collection(store, run_id, subject, source, result, collect)
    checkpoint.unlink(missing_ok=True)
    return len(result.stats)


def refill_from_corpus(
    config: RunConfig, subject: SubjectModel, source: FeatureSource, result: CollectionResult
) -> None:
    """Passes over the run's corpus again for the features of `result` short of non-firing windows
    (`autointerp.collect.quiet_pass`), after a single-process collection (a sharded run passes in shards)."""
    corpus = config.corpus
    windows = corpus_windows(subject.tokenizer, corpus)
    plan = SamplingPlan.from_config(config.collect)
    refill_quiet_windows(
        result, windows, source.activation_chunks, plan, corpus.batch_size, subject.device, corpus.max_windows
    )


def skip_reason(firing_windows: int, settings: CollectConfig) -> str | None:
    """Returns why a live feature with this many firing windows is not explained or scored (None: it is)."""
    if firing_windows >= settings.min_firing_windows:
        return None
    windows = "window" if firing_windows == 1 else "windows"
    return f"fires in {firing_windows} {windows} (collect.min_firing_windows = {settings.min_firing_windows})"


def evidence_summary(result: CollectionResult, settings: CollectConfig) -> str:
    """Returns one line on the evidence collected: features skipped for too few firing windows, and
    features scored on fewer non-firing windows than `collect.random_windows`."""
    counts = result.window_counts()
    live = [f for f, s in enumerate(result.stats) if not s.dead]
    skipped = [f for f in live if skip_reason(counts[f][0], settings)]
    few_quiet = [f for f in live if f not in skipped and counts[f][1] < settings.random_windows]
    return (
        f"collect: {len(live)} live features, {len(skipped)} skipped (fire in fewer than "
        f"{settings.min_firing_windows} windows), {len(few_quiet)} with fewer than {settings.random_windows} "
        "non-firing windows kept (scored on those)"
    )


def store_collection(
    store: Store,
    run_id: str,
    subject: SubjectModel,
    source: FeatureSource,
    result: CollectionResult,
    settings: CollectConfig,
) -> None:
    """Writes a collection's features and exemplars (tokens decoded) in one transaction; a feature that
    fires in fewer than `min_firing_windows` windows is stored with its skip reason."""
    ids, model = source.feature_ids, _model_name(source, subject)
    counts = result.window_counts()
    log.info(evidence_summary(result, settings))
    features = [
        {
            "run_id": run_id,
            "id": ids[f],
            "model": model,
            "hook": source.hooks[f],
            "kind": source.kind,
            "idx": source.indices[f],
            "max_activation": s.max_activation,
            "mean_activation": s.mean_activation,
            "density": s.density,
            "tokens": s.tokens,
            "dead": s.dead,
            "window_max_histogram": s.histogram,
            "firing_windows": counts[f][0],
            "nonfiring_windows": counts[f][1],
            "skip_reason": None if s.dead else skip_reason(counts[f][0], settings),
        }
        for f, s in enumerate(result.stats)
    ]
    exemplars = exemplar_table(run_id, ids, result.exemplars, subject.decode_tokens)
    if result.cooccurrence is not None:  # neighbours: written first, so a collection stored has its neighbours
        maxima = [s.max_activation for s in result.stats]
        store.write_neighbours(run_id, result.cooccurrence.neighbours(ids, maxima), kinds=["cooccurrence"])
    store.write_collection(run_id, features, exemplars)
