"""Decide stage: score every explanation with the configured methods, each beside its chance level.

For each explanation and method the store gets one row per metric (e.g. `correlation_top_and_random`)
and, when `score.distractor` is on, a row `<metric>_distractor`: the same scorer on the same windows
with another feature's explanation (chosen deterministically), so a score reads "0.62 (distractor
0.05)". An undefined value is NULL with the reason in `details.undefined`.

Explanations are scored through the feature pool, many at once; within one, a scorer's calls for
its windows run in parallel too, all bounded by the backend's limiter.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from autointerp.config import RunConfig
from autointerp.llm import CallRecorder, LLMSession, get_backend
from autointerp.llm.base import ChatBackend
from autointerp.metric_names import DISTRACTOR_SUFFIX, MAIN_METRIC
from autointerp.pipeline.common import load_subject
from autointerp.pipeline.pool import FeatureWork, StageResult, run_pool
from autointerp.records import Exemplar, Rows, Score
from autointerp.score.confidence import simulation_confidence
from autointerp.score.distractors import DistractorPool
from autointerp.score.feature_stage import combined, run_feature_scores
from autointerp.score.negatives import ensure_hard_negatives, neighbour_distractor, window_passes
from autointerp.score.outcome import ScoreOutcome
from autointerp.score.output import steering_target
from autointerp.score.registry import SCORERS, Scorer, ScoringContext
from autointerp.score.windows import HeldOutWindow
from autointerp.store.database import Store
from autointerp.subject.kinds import skipped_tokens

__all__ = ["DISTRACTOR_SUFFIX", "held_out_windows", "run_score"]


def held_out_windows(exemplars: list[Exemplar], max_activation: float, unread: int = 0) -> list[HeldOutWindow]:
    """Returns a feature's score-split exemplars as windows with true levels 0-10, the first `unread` tokens
    of each marked as not read (`skipped_tokens`)."""
    return [
        HeldOutWindow.measured(e.tokens, e.activations, max_activation, e.kind, e.rank, unread)
        for e in exemplars
        if e.split == "score"
    ]


def score_records(
    run_id: str,
    explanation_id: str,
    outcome: ScoreOutcome,
    metrics: tuple[str, ...],
    suffix: str,
    extra: dict[str, Any],
) -> list[Score]:
    """Returns one Score per metric of an outcome (NULL values carry their reason in `details.undefined`)."""
    records = []
    for metric in metrics:
        details: dict[str, Any] = {"llm_call_ids": outcome.call_ids, **extra, **outcome.details}
        value = outcome.values.get(metric)
        if value is None:
            details["undefined"] = outcome.undefined.get(metric, "undefined")
        records.append(
            Score(
                run_id=run_id,
                explanation_id=explanation_id,
                scorer=outcome.scorer,
                scorer_model=outcome.scorer_model,
                metric=metric + suffix,
                value=value,
                details=details,
            )
        )
    return records


def run_score(
    config: RunConfig, store: Store, run_id: str, session: LLMSession, feature_ids: Collection[str] | None = None
) -> StageResult:
    """Decide: scores every explanation not yet scored by each configured method (only those of
    `feature_ids` when given: a shard); returns the tallies (one item per explanation)."""
    scorers: dict[str, Scorer] = {name: SCORERS.get(name).from_config(config.score) for name in config.score.methods}
    per_feature = {name: s for name, s in scorers.items() if s.explanation_free}  # the intruder test
    scorers = {name: s for name, s in scorers.items() if not s.explanation_free}
    explanations = store.explanations(run_id)
    features = {f.id: f for f in store.features(run_id)}
    done = store.scored(run_id)
    todo = [
        (e, [m for m, s in scorers.items() if not any((e["id"], n) in done for n in s.stored_names())])
        for e in explanations
    ]
    todo = [(e, ms) for e, ms in todo if ms and (feature_ids is None or e["feature_id"] in feature_ids)]
    if todo and config.score.negatives != "random":  # hard negatives from the neighbours' top windows
        ensure_hard_negatives(config, store, run_id, feature_ids)
    exemplars = store.exemplars_by_feature(run_id, "score") if todo else {}
    neighbours = store.neighbours_by_feature(run_id) if todo and config.score.distractor_from == "neighbour" else {}
    backends: dict[str, ChatBackend] = {}
    for scorer in scorers.values():
        if scorer.role is not None:
            spec = config.score.simulator.model if scorer.role == "simulator" else config.score.judge.model
            backends.setdefault(scorer.role, get_backend(spec))
    latest: dict[str, dict[str, Any]] = {}
    for e in explanations:  # oldest first: the latest explanation of each feature wins
        latest[e["feature_id"]] = e
    pool = DistractorPool(list(latest.items()), lambda e: str(e["text"]))
    unread = skipped_tokens(config.features)
    steered = any(s.needs_subject for s in scorers.values()) and bool(todo)
    subject = load_subject(config) if steered else None  # scorers that steer the feature (output)

    def score_one(item: tuple[dict[str, Any], list[str]]) -> FeatureWork:
        explanation, pending = item
        feature = features[explanation["feature_id"]]
        held_out = held_out_windows(exemplars.get(feature.id, []), feature.max_activation, unread)
        distractors = pool.choose(feature.id, explanation["text"]) if config.score.distractor else []
        distractor_from = "random"
        if config.score.distractor and config.score.distractor_from == "neighbour":
            nearest = neighbour_distractor(feature.id, explanation["text"], neighbours.get(feature.id, []), latest)
            distractors, distractor_from = nearest or distractors, "neighbour" if nearest else "random (no neighbour)"
        recorder = CallRecorder(run_id, session)
        rows = Rows()
        skipped: list[str] = []
        passes = [(m, *p) for m in pending for p in window_passes(held_out, config.score.negatives)]
        for method, suffix, windows, negatives in passes:  # suffix `_hard`: on hard negatives
            scorer = scorers[method]
            if suffix and scorer.needs_subject:  # it reads continuations, not windows: one pass
                continue
            context = ScoringContext(
                explanations=[explanation["text"]] + [d["text"] for _, d in distractors],
                windows=windows,
                recorder=recorder,
                backend=backends.get(scorer.role) if scorer.role else None,
                feature_id=feature.id,
                explanation_ids=[explanation["id"]] * (1 + len(distractors)),
                steering=(
                    steering_target(config.features, subject, feature.to_row(), feature.max_activation)
                    if scorer.needs_subject and subject is not None
                    else None
                ),
            )
            outcomes = scorer.score(context)
            if outcomes[0].details.get("skipped"):  # nothing to steer: NULL rows with the reason, counted
                skipped.append(f"{method}: {outcomes[0].details['skipped']}")
            answered = outcomes[0].details.get("windows") or outcomes[0].details.get("items") or []
            if answered and outcomes[0].details.get("failed") == len(answered):
                # every call failed (server down, garbage answers): keep the calls, score again on a rerun
                return FeatureWork.failed(
                    feature.id, f"every {method} call failed (see `autointerp costs`)", Rows(recorder.take())
                )
            if outcomes[0].details.get("windows") and any(w.get("true") for w in outcomes[0].details["windows"]):
                confidence = simulation_confidence(outcomes[0].details, outcomes[1].details if distractors else None)
                if confidence is not None:
                    outcomes[0].details["confidence"] = confidence.as_details(outcomes[0].values.get(MAIN_METRIC))
            outcomes[0].details["non_firing_windows"] = sum(not w.activating for w in context.windows)
            for outcome in outcomes:
                outcome.details.update(negatives=negatives, distractor_from=distractor_from)
            rows.extend(score_records(run_id, explanation["id"], outcomes[0], scorer.metrics, suffix, {}))
            if distractors:
                _, other = distractors[0]
                extra = {
                    "distractor_explanation_id": other["id"],
                    "distractor_feature_id": other["feature_id"],
                    "distractor_text": other["text"],
                }
                rows.extend(
                    score_records(
                        run_id, explanation["id"], outcomes[1], scorer.metrics, suffix + DISTRACTOR_SUFFIX, extra
                    )
                )
            elif config.score.distractor:
                alone = ScoreOutcome(
                    scorer=outcomes[0].scorer,
                    scorer_model=outcomes[0].scorer_model,
                    values=dict.fromkeys(scorer.metrics),
                    undefined=dict.fromkeys(scorer.metrics, "no other feature's explanation in the run to use"),
                )
                rows.extend(
                    score_records(run_id, explanation["id"], alone, scorer.metrics, suffix + DISTRACTOR_SUFFIX, {})
                )
        rows.extend(recorder.take())
        if skipped:
            return FeatureWork.skipped(feature.id, "; ".join(skipped), rows)
        return FeatureWork(feature.id, rows)

    concurrency = max([session.limiter(b).concurrency for b in backends.values()] or [1])
    result = run_pool("score", todo, lambda item: item[0]["feature_id"], score_one, store.write_results, concurrency)
    if per_feature and result.stop_error is None:
        result = combined(result, run_feature_scores(config, store, run_id, session, per_feature, feature_ids))
    return result
