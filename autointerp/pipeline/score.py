"""Decide stage: score every explanation with the configured methods, each beside its chance level.

For each explanation and method the store gets one row per metric (e.g. `correlation_top_and_random`)
and, when `score.distractor` is on, a row `<metric>_distractor`: the same scorer on the same windows
with another feature's explanation (chosen deterministically), so a score reads "0.62 (distractor
0.05)". An undefined value is NULL with the reason in `details.undefined`.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from autointerp.activations import normalize_activations
from autointerp.config import RunConfig
from autointerp.llm import CallRecorder, get_backend
from autointerp.llm.base import ChatBackend
from autointerp.progress import progress_bar
from autointerp.score.distractors import choose_distractors
from autointerp.score.outcome import ScoreOutcome
from autointerp.score.scorers import METRICS_OF_METHOD, SCORERS_OF_METHOD, score_candidates
from autointerp.score.windows import HeldOutWindow
from autointerp.store import Store, now

DISTRACTOR_SUFFIX = "_distractor"


def held_out_windows(exemplars: list[dict[str, Any]], max_activation: float) -> list[HeldOutWindow]:
    """Returns a feature's score-split exemplars as windows with true levels 0-10."""
    return [
        HeldOutWindow(
            tokens=list(e["tokens"]),
            levels=normalize_activations(e["activations"], max_activation),
            kind=e["kind"],
            rank=e["rank"],
        )
        for e in exemplars
        if e["split"] == "score"
    ]


def _scored(store: Store, run_id: str) -> set[tuple[str, str]]:
    rows = store.query("SELECT DISTINCT explanation_id, scorer FROM scores WHERE run_id = ?", [run_id])
    return {(r["explanation_id"], r["scorer"]) for r in rows}


def _rows(
    run_id: str,
    explanation_id: str,
    outcome: ScoreOutcome,
    metrics: tuple[str, ...],
    suffix: str,
    extra: dict[str, Any],
) -> list[dict[str, Any]]:
    rows = []
    for metric in metrics:
        details: dict[str, Any] = {"llm_call_ids": outcome.call_ids, **extra, **outcome.details}
        value = outcome.values.get(metric)
        if value is None:
            details["undefined"] = outcome.undefined.get(metric, "undefined")
        rows.append(
            {
                "id": str(uuid.uuid4()),
                "run_id": run_id,
                "explanation_id": explanation_id,
                "scorer": outcome.scorer,
                "scorer_model": outcome.scorer_model,
                "metric": metric + suffix,
                "value": value,
                "details": json.dumps(details),
                "created_at": now(),
            }
        )
    return rows


def run_score(config: RunConfig, store: Store, run_id: str) -> int:
    """Decide: scores every explanation not yet scored by each configured method; returns how many
    explanations got new scores."""
    methods = config.score.methods
    explanations = store.explanations(run_id)
    features = {f["id"]: f for f in store.features(run_id)}
    done = _scored(store, run_id)
    todo = [
        (e, [m for m in methods if not any((e["id"], s) in done for s in SCORERS_OF_METHOD[m])]) for e in explanations
    ]
    todo = [(e, ms) for e, ms in todo if ms]
    backends: dict[str, ChatBackend] = {}

    def backend_for(method: str) -> ChatBackend | None:
        if method == "embedding":
            return None
        spec = config.score.simulator.model if method == "simulation" else config.score.judge.model
        if spec not in backends:
            backends[spec] = get_backend(spec)
        return backends[spec]

    latest: dict[str, dict[str, Any]] = {}
    for e in explanations:  # oldest first: the latest explanation of each feature wins
        latest[e["feature_id"]] = e
    scored = 0
    with progress_bar("score", total=len(todo), unit="explanations") as advance:
        for explanation, pending in todo:
            feature = features[explanation["feature_id"]]
            windows = held_out_windows(store.exemplars(run_id, feature["id"]), feature["max_activation"])
            candidates = [(fid, e) for fid, e in latest.items() if e["text"] != explanation["text"]]
            distractors = choose_distractors(feature["id"], candidates) if config.score.distractor else []
            recorder = CallRecorder(run_id)
            rows: list[dict[str, Any]] = []
            for method in pending:
                texts = [explanation["text"]] + [d["text"] for _, d in distractors]
                outcomes = score_candidates(
                    method,
                    texts,
                    windows,
                    backend=backend_for(method),
                    recorder=recorder,
                    feature_id=feature["id"],
                    explanation_ids=[explanation["id"]] * len(texts),
                    simulation_mode=config.score.simulation,
                    batch_size=config.score.batch_size,
                )
                metrics = METRICS_OF_METHOD[method]
                rows += _rows(run_id, explanation["id"], outcomes[0], metrics, "", {})
                if distractors:
                    _, other = distractors[0]
                    extra = {
                        "distractor_explanation_id": other["id"],
                        "distractor_feature_id": other["feature_id"],
                        "distractor_text": other["text"],
                    }
                    rows += _rows(run_id, explanation["id"], outcomes[1], metrics, DISTRACTOR_SUFFIX, extra)
                elif config.score.distractor:
                    alone = ScoreOutcome(
                        scorer=outcomes[0].scorer,
                        scorer_model=outcomes[0].scorer_model,
                        values=dict.fromkeys(metrics),
                        undefined=dict.fromkeys(metrics, "no other feature's explanation in the run to use"),
                    )
                    rows += _rows(run_id, explanation["id"], alone, metrics, DISTRACTOR_SUFFIX, {})
            store.write_results({"scores": rows, "llm_calls": recorder.take()})
            scored += 1
            advance(1)
    return scored
