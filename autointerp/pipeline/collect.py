"""Observe stage: collect exemplars and statistics for the run's features."""

from __future__ import annotations

import logging
import random

from autointerp.collect import collect_exemplars
from autointerp.config import RunConfig
from autointerp.corpus import CorpusStats, iter_windows
from autointerp.pipeline.common import feature_id, load_subject
from autointerp.store import Store
from autointerp.subject import SubjectModel, check_neuron_indices, mlp_down_proj, mlp_neuron_activations

log = logging.getLogger(__name__)


def choose_neurons(config: RunConfig, subject: SubjectModel) -> list[int]:
    """Returns the configured neuron indices, checked against the model, or a seeded draw."""
    mlp_down_proj(subject, config.features.layer)  # raises FeatureError for a bad layer
    if config.features.indices:
        check_neuron_indices(subject, config.features.indices)
        return list(config.features.indices)
    count = min(config.features.count, subject.d_mlp)
    return sorted(random.Random(config.features.seed).sample(range(subject.d_mlp), count))


def run_collect(config: RunConfig, store: Store, run_id: str) -> int:
    """Observe: collects exemplars and stats; returns the number of features stored."""
    if store.has_features(run_id):
        log.info("collection of %s already stored; skipping", run_id)
        return len(store.features(run_id))
    subject = load_subject(config)
    indices = choose_neurons(config, subject)
    layer, corpus = config.features.layer, config.corpus
    corpus_stats = CorpusStats()
    windows = iter_windows(
        subject.tokenizer,
        corpus.source,
        window_tokens=corpus.window_tokens,
        max_windows=corpus.max_windows,
        text_field=corpus.text_field,
        stats=corpus_stats,
    )
    result = collect_exemplars(
        windows,
        lambda ids: mlp_neuron_activations(subject, ids, layer, indices),
        feature_indices=indices,
        window_tokens=corpus.window_tokens,
        batch_size=corpus.batch_size,
        top_k=config.collect.top_k,
        random_windows=config.collect.random_windows,
        seed=config.collect.seed,
        device=subject.device,
        total_windows=corpus.max_windows,
    )
    log.info("corpus: %s", corpus_stats)
    ids = [feature_id(subject.slug, layer, i) for i in indices]
    features = [
        {
            "run_id": run_id,
            "id": ids[f],
            "model": subject.slug,
            "hook": f"mlp.{layer}",
            "kind": "neuron",
            "idx": indices[f],
            "max_activation": s.max_activation,
            "mean_activation": s.mean_activation,
            "density": s.density,
            "tokens": s.tokens,
            "dead": s.dead,
        }
        for f, s in enumerate(result.stats)
    ]
    exemplars = [
        {
            "run_id": run_id,
            "feature_id": ids[e.feature_index],
            "kind": e.kind,
            "rank": e.rank,
            "doc_id": e.window.doc_id,
            "token_offset": e.window.offset,
            "token_ids": e.window.token_ids,
            "tokens": subject.decode_tokens(e.window.token_ids),
            "activations": e.activations,
            "max_activation": e.max_activation,
            "split": e.split,
        }
        for e in result.exemplars
    ]
    store.write_collection(run_id, features, exemplars)
    return len(features)
