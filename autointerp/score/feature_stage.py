"""The score stage's explanation-free part: scorers such as the intruder test, run once per feature.

Every feature of the run gets a row per metric in `feature_scores`, explained or not: a live feature its
number (from all its kept windows, explanation and score splits alike, since no explanation is shown), a dead
or skipped one NULL with the reason. A rerun scores only the features without rows.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace

from autointerp.activations import normalize_activations
from autointerp.config import RunConfig
from autointerp.llm import CallRecorder, LLMSession, get_backend
from autointerp.pipeline.pool import FeatureWork, StageResult, run_pool
from autointerp.records import Exemplar, Feature, FeatureScore, Rows
from autointerp.score.outcome import ScoreOutcome, undefined_outcome
from autointerp.score.registry import Scorer, ScoringContext
from autointerp.score.windows import HeldOutWindow
from autointerp.store.database import Store


def feature_windows(exemplars: list[Exemplar], max_activation: float) -> list[HeldOutWindow]:
    """Returns every kept window of a feature (both splits) with its true levels 0-10."""
    return [
        HeldOutWindow(list(e.tokens), normalize_activations(e.activations, max_activation), e.kind, e.rank)
        for e in exemplars
    ]


def feature_score_records(run_id: str, feature_id: str, outcome: ScoreOutcome, metrics: tuple[str, ...]) -> Rows:
    """Returns one FeatureScore per metric of an outcome (NULL values carry their reason in `details.undefined`)."""
    rows = Rows()
    for metric in metrics:
        details = {"llm_call_ids": outcome.call_ids, **outcome.details}
        if outcome.values.get(metric) is None:
            details["undefined"] = outcome.undefined.get(metric, "undefined")
        rows.add(
            FeatureScore(
                run_id=run_id,
                feature_id=feature_id,
                scorer=outcome.scorer,
                scorer_model=outcome.scorer_model,
                metric=metric,
                value=outcome.values.get(metric),
                details=details,
            )
        )
    return rows


def run_feature_scores(
    config: RunConfig,
    store: Store,
    run_id: str,
    session: LLMSession,
    scorers: dict[str, Scorer],
    feature_ids: Collection[str] | None = None,
) -> StageResult:
    """Runs the explanation-free `scorers` on every feature of the run (of `feature_ids` when given) that has
    no rows of theirs yet; returns the tallies (one item per feature)."""
    done = store.feature_scored(run_id)
    todo: list[tuple[Feature, list[str]]] = []
    for feature in store.features(run_id):
        pending = [name for name in scorers if (feature.id, name) not in done]
        if pending and (feature_ids is None or feature.id in feature_ids):
            todo.append((feature, pending))
    if not todo:
        return StageResult("score (per feature)")
    if config.score.negatives != "random":  # intruders from the neighbours' top windows
        from autointerp.score.negatives import ensure_hard_negatives

        ensure_hard_negatives(config, store, run_id, feature_ids)
    exemplars = store.exemplars_by_feature(run_id, "explain")
    for feature_id, held_out in store.exemplars_by_feature(run_id, "score").items():
        exemplars[feature_id] = exemplars.get(feature_id, []) + held_out
    judge = get_backend(config.score.judge.model)

    def score_one(item: tuple[Feature, list[str]]) -> FeatureWork:
        feature, pending = item
        recorder = CallRecorder(run_id, session)
        rows = Rows()
        windows = feature_windows(exemplars.get(feature.id, []), feature.max_activation)
        for name in pending:
            scorer = scorers[name]
            backend = judge if scorer.role is not None else None
            if not feature.live:
                why = "dead: it never fires on the corpus" if feature.dead else str(feature.skip_reason)
                outcome = undefined_outcome(name, backend.name if backend else "", scorer.metrics, why)
            else:
                context = ScoringContext([], windows, recorder, backend, feature_id=feature.id)
                outcome = scorer.score(context)[0]
                asked = outcome.details.get("answered", 0) + outcome.details.get("failed", 0)
                if asked and outcome.details.get("failed") == asked:  # server down: score again on a rerun
                    return FeatureWork.failed(feature.id, f"every {name} call failed", Rows(recorder.take()))
            rows.extend(feature_score_records(run_id, feature.id, outcome, scorer.metrics))
        rows.extend(recorder.take())
        return FeatureWork(feature.id, rows)

    concurrency = session.limiter(judge).concurrency
    return run_pool("score (per feature)", todo, lambda item: item[0].id, score_one, store.write_results, concurrency)


def combined(first: StageResult, second: StageResult) -> StageResult:
    """Returns one stage's tallies from two passes (per explanation and per feature)."""
    failed = {**first.failed, **{f"{k} (per feature)": v for k, v in second.failed.items()}}
    skipped = dict(first.skipped)
    for reason, n in second.skipped.items():
        skipped[reason] = skipped.get(reason, 0) + n
    return replace(
        first,
        total=first.total + second.total,
        done=first.done + second.done,
        skipped=skipped,
        failed=failed,
        not_reached=first.not_reached + second.not_reached,
        stopped=first.stopped or second.stopped,
        stop_error=first.stop_error or second.stop_error,
    )
