"""The four stages of the loop as plain functions over a run's config and store.

Each stage reads its inputs from the store, skips work already stored for the run, and
writes each unit of work (one feature, one explanation) with its LLM calls in one
transaction, so a run that stops part-way resumes without redoing or duplicating rows.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

from autointerp.activations import normalize_activations
from autointerp.collect import collect_exemplars
from autointerp.config import RunConfig
from autointerp.corpus import CorpusStats, iter_windows
from autointerp.errors import LLMError
from autointerp.experiment import experiment_row, propose_inputs, run_input_experiment
from autointerp.explain import explain_feature
from autointerp.llm import CallRecorder, get_backend
from autointerp.llm.local import LocalChatBackend
from autointerp.progress import progress_bar
from autointerp.prompts import PromptTemplate, load_prompt
from autointerp.score.metrics import pooled_correlation
from autointerp.score.simulation import simulate_all_at_once
from autointerp.store import Store, now
from autointerp.subject import (
    SubjectModel,
    check_neuron_indices,
    load_subject_model,
    mlp_down_proj,
    mlp_neuron_activations,
)

log = logging.getLogger(__name__)

SIMULATION_SCORER = "simulation-all-at-once"
MAIN_METRIC = "correlation_top_and_random"


def feature_id(slug: str, layer: int, index: int) -> str:
    """Returns the stable feature id, e.g. `smollm2-135m/mlp.15/417`."""
    return f"{slug}/mlp.{layer}/{index}"


def load_subject(config: RunConfig) -> SubjectModel:
    """Returns the run's subject model (cached per process)."""
    return load_subject_model(config.subject.model, config.subject.device, config.subject.dtype)


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


def _live_features(store: Store, run_id: str) -> list[dict[str, Any]]:
    return [f for f in store.features(run_id) if not f["dead"]]


def _attempted(store: Store, run_id: str, role: str, key: str) -> set[str]:
    """Returns feature or explanation ids that already have a call of `role` in this run."""
    rows = store.query(f"SELECT DISTINCT {key} FROM llm_calls WHERE run_id = ? AND role = ?", [run_id, role])
    return {r[key] for r in rows if r[key] is not None}


def run_explain(config: RunConfig, store: Store, run_id: str) -> int:
    """Orient: writes one explanation per live feature not yet attempted; returns how many were written."""
    backend = get_backend(config.explainer.model)
    done = _attempted(store, run_id, "explain", "feature_id")
    todo = [f for f in _live_features(store, run_id) if f["id"] not in done]
    written = 0
    with progress_bar("explain", total=len(todo), unit="features") as advance:
        for feature in todo:
            exemplars = [e for e in store.exemplars(run_id, feature["id"]) if e["split"] == "explain"]
            recorder = CallRecorder(run_id)
            outcome = explain_feature(
                backend,
                recorder,
                feature_id=feature["id"],
                exemplars=exemplars,
                max_activation=feature["max_activation"],
                max_tokens=config.explainer.max_tokens,
                temperature=config.explainer.temperature,
                retries=config.explainer.retries,
            )
            rows = [outcome.row] if outcome.row else []
            store.write_results({"explanations": rows, "llm_calls": recorder.take()})
            written += len(rows)
            advance(1)
    return written


def _simulation_backend(config: RunConfig) -> LocalChatBackend:
    backend = get_backend(config.score.simulator.model)
    if not isinstance(backend, LocalChatBackend):
        raise LLMError(
            f"all-at-once simulation reads token probabilities and needs a local backend; "
            f"score.simulator.model is {backend.name!r} (use local:<model>)"
        )
    return backend


def run_score(config: RunConfig, store: Store, run_id: str) -> int:
    """Decide: simulation-scores every explanation not yet scored; returns how many were scored."""
    backend = _simulation_backend(config)
    template = load_prompt("simulate")
    features = {f["id"]: f for f in store.features(run_id)}
    done = _attempted(store, run_id, "simulate", "explanation_id")
    todo = [e for e in store.explanations(run_id) if e["id"] not in done]
    scored = 0
    with progress_bar("score", total=len(todo), unit="explanations") as advance:
        for explanation in todo:
            feature = features[explanation["feature_id"]]
            held_out = [e for e in store.exemplars(run_id, feature["id"]) if e["split"] == "score"]
            recorder = CallRecorder(run_id)
            rows = _score_explanation(backend, template, recorder, explanation, feature, held_out)
            store.write_results({"scores": rows, "llm_calls": recorder.take()})
            scored += 1
            advance(1)
    return scored


def _score_explanation(
    backend: LocalChatBackend,
    template: PromptTemplate,
    recorder: CallRecorder,
    explanation: dict[str, Any],
    feature: dict[str, Any],
    held_out: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    started = time.perf_counter()
    windows = [e["tokens"] for e in held_out]
    predicted, prompt_tokens = simulate_all_at_once(backend, template, explanation["text"], windows)
    true = [normalize_activations(e["activations"], feature["max_activation"]) for e in held_out]
    per_window = [
        {"kind": e["kind"], "rank": e["rank"], "true": t, "predicted": [round(p, 3) for p in pred]}
        for e, t, pred in zip(held_out, true, predicted, strict=True)
    ]
    request = {"explanation": explanation["text"], "windows": len(windows), "method": "all-at-once"}
    call_id = recorder.record(
        role="simulate",
        backend=backend.backend,
        model=backend.model,
        prompt_hash=template.hash,
        request=request,
        response=json.dumps([w["predicted"] for w in per_window]),
        feature_id=feature["id"],
        explanation_id=explanation["id"],
        input_tokens=prompt_tokens,
        latency_s=time.perf_counter() - started,
    )
    top = [i for i, e in enumerate(held_out) if e["kind"] == "top"]
    metrics = {
        MAIN_METRIC: pooled_correlation(true, predicted),
        "correlation_top": pooled_correlation([true[i] for i in top], [predicted[i] for i in top]),
    }
    rows = []
    for metric, value in metrics.items():
        details: dict[str, Any] = {"llm_call_id": call_id, "windows": per_window}
        if value is None:
            details["undefined"] = "true activations are constant on these windows"
        rows.append(
            {
                "id": str(uuid.uuid4()),
                "run_id": recorder.run_id,
                "explanation_id": explanation["id"],
                "scorer": SIMULATION_SCORER,
                "scorer_model": backend.name,
                "metric": metric,
                "value": value,
                "details": json.dumps(details),
                "created_at": now(),
            }
        )
    return rows


def _max_activation_of(subject: SubjectModel, layer: int, index: int) -> Callable[[str], float]:
    def measure(text: str) -> float:
        ids = subject.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        if ids.shape[1] == 0:
            return 0.0
        return float(mlp_neuron_activations(subject, ids, layer, [index]).max())

    return measure


def run_experiments(config: RunConfig, store: Store, run_id: str) -> int:
    """Act: proposes and runs input experiments for the lowest-scoring explanations; returns how many ran."""
    if config.experiments.lowest_n == 0:
        return 0
    scores = {s["explanation_id"]: s["value"] for s in store.scores(run_id, MAIN_METRIC)}
    candidates = sorted(
        (e for e in store.explanations(run_id) if e["id"] in scores),
        key=lambda e: (scores[e["id"]] is not None, scores[e["id"]] or 0.0),
    )[: config.experiments.lowest_n]
    done = _attempted(store, run_id, "propose", "explanation_id")
    todo = [e for e in candidates if e["id"] not in done]
    if not todo:
        return 0
    proposer_cfg = config.experiments.proposer
    backend = get_backend(proposer_cfg.model)
    subject = load_subject(config)
    features = {f["id"]: f for f in store.features(run_id)}
    ran = 0
    with progress_bar("experiment", total=len(todo), unit="features") as advance:
        for explanation in todo:
            feature = features[explanation["feature_id"]]
            exemplars = [e for e in store.exemplars(run_id, feature["id"]) if e["split"] == "explain"][:3]
            recorder = CallRecorder(run_id)
            proposal = propose_inputs(
                backend,
                recorder,
                feature_id=feature["id"],
                explanation_id=explanation["id"],
                explanation=explanation["text"],
                exemplars=exemplars,
                max_activation=feature["max_activation"],
                per_side=config.experiments.texts_per_side,
                max_tokens=proposer_cfg.max_tokens,
                temperature=proposer_cfg.temperature,
                retries=proposer_cfg.retries,
            )
            rows = []
            if proposal is not None:
                layer = int(feature["hook"].split(".")[1])
                measured, verdict = run_input_experiment(
                    proposal, _max_activation_of(subject, layer, feature["idx"]), feature["max_activation"]
                )
                rows.append(experiment_row(run_id, explanation["id"], proposal, measured, verdict))
                ran += 1
            store.write_results({"experiments": rows, "llm_calls": recorder.take()})
            advance(1)
    return ran
