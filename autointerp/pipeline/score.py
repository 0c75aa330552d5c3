"""Decide stage: simulation scoring of every explanation not yet scored."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from autointerp.activations import normalize_activations
from autointerp.config import RunConfig
from autointerp.errors import LLMError
from autointerp.llm import CallRecorder, get_backend
from autointerp.llm.local import LocalChatBackend
from autointerp.pipeline.common import MAIN_METRIC, SIMULATION_SCORER, attempted
from autointerp.progress import progress_bar
from autointerp.prompts import PromptTemplate, load_prompt
from autointerp.score.metrics import pooled_correlation
from autointerp.score.simulation import simulate_all_at_once
from autointerp.store import Store, now


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
    done = attempted(store, run_id, "simulate", "explanation_id")
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
