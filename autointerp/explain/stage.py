"""Orient stage: one explanation per live feature, many features at once through the feature pool.

A feature is done once it has a first explanation in the run. A feature whose calls all failed (the
server was down, the answers did not parse) keeps its calls and is retried by the next run of the
same config, up to MAX_STAGE_ATTEMPTS times; after that it is reported as failed without new calls.

An explainer that generates many prompts in one padded batch (`capabilities().batched_generation`: a
model in this process) gets the first attempt of a chunk of features in one `generate_many` call (one
`llm_calls` row per feature); only the features whose answer did not parse retry one at a time.
"""

from __future__ import annotations

from typing import Any

from autointerp.config import RunConfig
from autointerp.explain.best_of import BestOf, explain_best_of, weighs_top_tokens
from autointerp.explain.contrastive import Contrast, split_for_contrast
from autointerp.explain.explainer import (
    ExplainOutcome,
    ExplanationParseError,
    explain_feature,
    explain_request,
    explain_template,
    parse_explanation,
)
from autointerp.llm import CallRecorder, ChatBackend, ChatResponse, LLMSession, get_backend
from autointerp.pipeline.common import live_features, needing_explanation
from autointerp.pipeline.pool import STOPPING_ERRORS, ChunkWork, FeatureWork, StageResult, run_chunked_pool, run_pool
from autointerp.records import Feature, Rows
from autointerp.store.database import Store

MAX_STAGE_ATTEMPTS = 3
"""How many runs of a config may try a feature whose explanation calls all failed."""


def parses(answer: str) -> bool:
    """Returns whether an explainer's answer holds a usable explanation."""
    try:
        parse_explanation(answer)
    except ExplanationParseError:
        return False
    return True


def batches_generation(backend: ChatBackend) -> bool:
    """Returns whether `backend` generates many prompts in one padded batch. A backend that keeps the
    default `generate_many` (one call after another) is not asked: a server backend's `capabilities()`
    may probe the server."""
    overrides = type(backend).generate_many is not ChatBackend.generate_many
    return overrides and backend.capabilities().batched_generation


def run_explain(config: RunConfig, store: Store, run_id: str, session: LLMSession) -> StageResult:
    """Orient: writes one explanation per live feature that has none yet; returns the stage's tallies.

    Stops (after writing what is in flight) when the run reaches its budget; `StageResult.stopped`
    says so and the features not reached are left for a rerun.
    """
    backend = get_backend(config.explainer.model)
    explained = store.explained_feature_ids(run_id)  # imported explanations do not stand in for ours
    calls = store.call_counts(run_id, "explain")
    settings = config.explainer
    features = [f for f in live_features(store, run_id) if f.id not in explained]
    template_hash = explain_template(Contrast([], 0) if settings.contrastive else None, settings.evidence).hash
    outputs = store.output_evidence_by_feature(run_id) if settings.evidence != "input" else {}
    if config.schedule.incremental:  # scheduled runs: only new or stale features
        features = needing_explanation(store, run_id, features, backend.name, template_hash)
    calls_per_attempt = (settings.retries + 1) * settings.best_of
    exemplars = store.exemplars_by_feature(run_id, "explain")
    best_of = BestOf.from_config(config) if settings.best_of > 1 or weighs_top_tokens(config) else None

    def shown(feature: Feature) -> tuple[list[dict[str, Any]], Contrast | None]:
        """Returns the windows shown as activating, and the contrast windows when `contrastive` is on (as
        window dicts, what the explainer and the benchmark's planted windows share)."""
        mine = [e.to_row() for e in exemplars.get(feature.id, [])]
        if not settings.contrastive:
            return mine, None
        return split_for_contrast(mine, feature.max_activation, settings.contrastive_windows)

    def gave_up(feature: Feature) -> FeatureWork | None:
        earlier = calls.get(feature.id, 0)
        if earlier >= MAX_STAGE_ATTEMPTS * calls_per_attempt:
            return FeatureWork.failed(
                feature.id,
                f"gave up after {earlier} failed explain calls in earlier attempts (see `autointerp costs`)",
            )
        return None

    def explain_one(
        feature: Feature,
        recorder: CallRecorder | None = None,
        first_answer: tuple[ChatResponse | None, str] | None = None,
    ) -> FeatureWork:
        given_up = gave_up(feature)
        if given_up is not None:
            return given_up
        recorder = recorder or CallRecorder(run_id, session)
        activating, contrast = shown(feature)
        asked: dict[str, Any] = {
            "feature_id": feature.id,
            "exemplars": activating,
            "max_activation": feature.max_activation,
            "max_tokens": settings.max_tokens,
            "temperature": settings.temperature,
            "retries": settings.retries,
            "first_answer": first_answer,
            "contrast": contrast,
            "evidence": settings.evidence,
            "output": outputs.get(feature.id),
        }
        outcome: ExplainOutcome
        if best_of is None:
            outcome = explain_feature(backend, recorder, **asked)
        else:  # simulated on every explanation-split window the explainer saw, never on held-out ones
            outcome = explain_best_of(backend, recorder, best_of, **asked)
        rows = Rows(recorder.take())
        if outcome.explanation is None:
            return FeatureWork.failed(feature.id, outcome.error or "no usable answer", rows)
        rows.add(outcome.explanation)
        return FeatureWork(feature.id, rows)

    def explain_chunk(chunk: list[Feature]) -> ChunkWork:
        """First attempts of the chunk in one batch; retries one feature at a time."""
        works = [w for w in map(gave_up, chunk) if w is not None]
        pending = [f for f in chunk if gave_up(f) is None]
        requests = []
        for f in pending:
            activating, contrast = shown(f)
            requests.append(
                explain_request(
                    activating,
                    f.max_activation,
                    max_tokens=settings.max_tokens,
                    temperature=settings.temperature,
                    contrast=contrast,
                    evidence=settings.evidence,
                    output=outputs.get(f.id),
                )
            )
        batch = CallRecorder(run_id, session)
        answers = batch.call_many(
            backend, requests, role="explain", prompt_hash=template_hash, feature_ids=[f.id for f in pending]
        )
        rows = {row.id: row for row in batch.take()}
        firsts = [
            (f, CallRecorder(run_id, session, [rows[call_id]]), (r, call_id))
            for f, (r, call_id) in zip(pending, answers, strict=True)
        ]
        parsed = [item for item in firsts if item[2][0] is not None and parses(item[2][0].text)]
        retried = [item for item in firsts if item not in parsed]
        for feature, recorder, first in parsed + retried:  # the answers that parse cost no new call
            try:
                works.append(explain_one(feature, recorder, first))
            except STOPPING_ERRORS as exc:
                return ChunkWork(works, stop=exc)
        return ChunkWork(works)

    concurrency = session.limiter(backend).concurrency
    if batches_generation(backend):
        result = run_chunked_pool(
            "explain", features, lambda f: f.id, explain_chunk, store.write_results,
            chunk_size=2 * backend.generation_batch_size, concurrency=concurrency,
        )  # fmt: skip
    else:
        result = run_pool("explain", features, lambda f: f.id, explain_one, store.write_results, concurrency)
    # features collection left out for too little evidence: counted, with the reason, in the stage's line
    too_few = [f for f in store.features(run_id) if not f.dead and f.skip_reason]
    if too_few:
        reason = f"fire in fewer than {config.collect.min_firing_windows} windows"
        result.total += len(too_few)
        result.skipped[reason] = result.skipped.get(reason, 0) + len(too_few)
    return result
