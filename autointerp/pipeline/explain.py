"""Orient stage: one explanation per live feature, many features at once through the feature pool.

A feature is done once it has a first explanation in the run. A feature whose calls all failed (the
server was down, the answers did not parse) keeps its calls and is retried by the next run of the
same config, up to MAX_STAGE_ATTEMPTS times; after that it is reported as failed without new calls.
"""

from __future__ import annotations

from typing import Any

from autointerp.config import RunConfig
from autointerp.explain import explain_feature
from autointerp.llm import CallRecorder, LLMSession, get_backend
from autointerp.pipeline.common import live_features, needing_explanation
from autointerp.pipeline.pool import FeatureWork, StageResult, run_pool
from autointerp.prompts import load_prompt
from autointerp.records import Rows
from autointerp.store import Store

MAX_STAGE_ATTEMPTS = 3
"""How many runs of a config may try a feature whose explanation calls all failed."""


def run_explain(config: RunConfig, store: Store, run_id: str, session: LLMSession) -> StageResult:
    """Orient: writes one explanation per live feature that has none yet; returns the stage's tallies.

    Stops (after writing what is in flight) when the run reaches its budget; `StageResult.stopped`
    says so and the features not reached are left for a rerun.
    """
    backend = get_backend(config.explainer.model)
    explained = {
        r["feature_id"]
        for r in store.query(
            # explanations imported from other tools (`autointerp import`) do not stand in for ours
            "SELECT DISTINCT feature_id FROM explanations WHERE run_id = ? AND iteration = 0"
            " AND explainer NOT LIKE 'import:%'",
            [run_id],
        )
    }
    calls = {
        r["feature_id"]: r["n"]
        for r in store.query(
            "SELECT feature_id, count(*) AS n FROM llm_calls WHERE run_id = ? AND role = 'explain' GROUP BY feature_id",
            [run_id],
        )
    }
    features = [f for f in live_features(store, run_id) if f["id"] not in explained]
    if config.schedule.incremental:  # scheduled runs: only new or stale features
        features = needing_explanation(store, run_id, features, backend.name, load_prompt("explain").hash)
    calls_per_attempt = config.explainer.retries + 1
    exemplars = store.exemplars_by_feature(run_id, "explain")

    def explain_one(feature: dict[str, Any]) -> FeatureWork:
        earlier = calls.get(feature["id"], 0)
        if earlier >= MAX_STAGE_ATTEMPTS * calls_per_attempt:
            return FeatureWork.failed(
                feature["id"],
                f"gave up after {earlier} failed explain calls in earlier attempts (see `autointerp costs`)",
            )
        recorder = CallRecorder(run_id, session)
        outcome = explain_feature(
            backend,
            recorder,
            feature_id=feature["id"],
            exemplars=exemplars.get(feature["id"], []),
            max_activation=feature["max_activation"],
            max_tokens=config.explainer.max_tokens,
            temperature=config.explainer.temperature,
            retries=config.explainer.retries,
        )
        rows = Rows(recorder.take())
        if outcome.explanation is None:
            return FeatureWork.failed(feature["id"], outcome.error or "no usable answer", rows)
        rows.add(outcome.explanation)
        return FeatureWork(feature["id"], rows)

    concurrency = session.limiter(backend).concurrency
    return run_pool("explain", features, lambda f: f["id"], explain_one, store.write_results, concurrency)
