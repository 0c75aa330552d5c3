"""Orient stage: one explanation per live feature."""

from __future__ import annotations

from autointerp.config import RunConfig
from autointerp.explain import explain_feature
from autointerp.llm import CallRecorder, get_backend
from autointerp.pipeline.common import attempted, live_features
from autointerp.progress import progress_bar
from autointerp.store import Store


def run_explain(config: RunConfig, store: Store, run_id: str) -> int:
    """Orient: writes one explanation per live feature not yet attempted; returns how many were written."""
    backend = get_backend(config.explainer.model)
    done = attempted(store, run_id, "explain", "feature_id")
    todo = [f for f in live_features(store, run_id) if f["id"] not in done]
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
