"""Act stage: experiments on weak explanations, then revision and rescoring, in rounds.

Each round for a feature takes its latest explanation, runs the configured experiments on the
subject model, asks the explainer to revise with the results, and rescores the revision on the
same held-out windows. A round's experiments, revision and LLM calls are written in one
transaction, so the loop resumes where it stopped. It stops when the score reaches
`score_threshold`, when a round changes nothing, or after `max_rounds` rounds.

Input and minimal-pair experiments run on every kind of feature (planted ones included);
ablation and steering on features that are a direction in the model: MLP neurons, SAE latents
(along their decoder row) and user directions.
"""

from __future__ import annotations

import logging
from typing import Any

from autointerp.config import RunConfig
from autointerp.errors import FeatureError
from autointerp.experiments.rounds import Experimenter, FeatureTarget
from autointerp.llm import CallRecorder, LLMSession, get_backend
from autointerp.metric_names import DISTRACTOR_SUFFIX, MAIN_METRIC
from autointerp.pipeline.common import attempted, load_subject
from autointerp.pipeline.pool import FeatureWork, StageResult, run_pool
from autointerp.records import Rows
from autointerp.score.registry import SCORERS
from autointerp.score.stage import run_score
from autointerp.store.database import Store
from autointerp.subject.kinds import feature_source_for

log = logging.getLogger(__name__)

EXPERIMENT_ROLES = ("propose", "revise")


def select_targets(config: RunConfig, store: Store, run_id: str) -> list[str]:
    """Returns feature ids to investigate: every feature a reviewer asked experiments for, then up to
    `lowest_n` others: those investigated before in this run (so a rerun resumes them rather than
    picking new ones), then those whose current score is below the threshold or undefined, lowest
    first, then those whose scorers disagree (`on_disagreement`)."""
    requested = store.features_with_review(run_id, "request_experiments")
    investigated = sorted(set().union(*(attempted(store, run_id, role, "feature_id") for role in EXPERIMENT_ROLES)))
    current = store.current_explanations(run_id, MAIN_METRIC)
    weak = [e for e in current if e["score"] is None or e["score"] < config.experiments.score_threshold]
    weak.sort(key=lambda e: (e["score"] is not None, e["score"] or 0.0, e["feature_id"]))
    disagreeing = scorer_disagreements(store, run_id, current) if config.experiments.on_disagreement else []
    others = list(dict.fromkeys([*investigated, *(e["feature_id"] for e in weak), *disagreeing]))
    others = [f for f in others if f not in requested][: config.experiments.lowest_n]
    return [*requested, *others]


def scorer_disagreements(store: Store, run_id: str, current: list[dict[str, Any]]) -> list[str]:
    """Returns the features whose current explanation beats its distractor on one scoring method
    and not on another (methods with both numbers defined)."""
    beats: dict[str, set[bool]] = {}
    for metrics in (SCORERS.get(name).verdict_metrics for name in SCORERS.names()):
        for metric in metrics:
            value = {s["explanation_id"]: s["value"] for s in store.scores(run_id, metric)}
            chance = {s["explanation_id"]: s["value"] for s in store.scores(run_id, metric + DISTRACTOR_SUFFIX)}
            if not value:
                continue
            for explanation in current:
                mine, other = value.get(explanation["id"]), chance.get(explanation["id"])
                if mine is not None and other is not None:
                    beats.setdefault(explanation["feature_id"], set()).add(mine > other)
            break
    return sorted(feature for feature, verdicts in beats.items() if verdicts == {True, False})


class Investigation:
    """Runs experiment rounds on one run's features, reading and writing its store."""

    def __init__(self, config: RunConfig, store: Store, run_id: str, session: LLMSession) -> None:
        self.config, self.store, self.run_id, self.session = config, store, run_id, session
        self.settings = config.experiments
        self.subject = load_subject(config)
        self.experimenter = Experimenter(self.settings, self.subject, get_backend(config.explainer.model), run_id)

    def investigate(self, feature_id: str) -> str:
        """Runs rounds on one feature until a stop condition; returns why it stopped. Each round reads
        only this feature's latest explanation, its score and whether it was experimented on."""
        feature = self.store.feature(self.run_id, feature_id)
        if feature is None:
            raise FeatureError(f"no feature {feature_id} in run {self.run_id}; pick one that `autointerp show` lists")
        row = feature.to_row()  # experiment kinds and the feature source read the feature's row
        target = FeatureTarget(row, feature_source_for(self.config.features, self.subject, row))
        exemplars = [e.to_row() for e in self.store.exemplars(self.run_id, feature_id, split="explain")[:3]]
        while True:
            latest = self.store.latest_explanation(self.run_id, feature_id)
            if latest is None:
                return "no explanation"
            score = self.store.score_value(self.run_id, latest["id"], MAIN_METRIC)
            if score is not None and score >= self.settings.score_threshold:
                return "threshold"
            if latest["iteration"] >= self.settings.max_rounds:
                return "budget"
            if self.store.has_calls(self.run_id, latest["id"], EXPERIMENT_ROLES):
                return "no change"
            outcome = self.experimenter.run_round(target, latest, exemplars, CallRecorder(self.run_id, self.session))
            rows = Rows(outcome.experiments)
            if outcome.revision is not None:
                rows.add(outcome.revision)
            rows.extend(outcome.recorder.take())
            self.store.write_results(rows)
            if outcome.revision is None:
                return "no change"
            # this feature's revision only: another feature's unscored explanation (its scoring failed) is the
            # score stage's to redo, and two experiment shards scoring it would each add its rows
            rescored = run_score(self.config, self.store, self.run_id, self.session, feature_ids=[feature_id])
            if rescored.stop_error is not None:
                raise rescored.stop_error


def run_experiments(
    config: RunConfig, store: Store, run_id: str, session: LLMSession, feature_ids: list[str] | None = None
) -> StageResult:
    """Act: investigates the chosen (default: the weakest) features; returns the stage's tallies.

    Features are investigated one at a time: interventions hook the one subject model in this
    process, so two features' edits must not overlap.
    """
    targets = feature_ids if feature_ids is not None else select_targets(config, store, run_id)
    if not targets:
        return StageResult("experiment")
    investigation = Investigation(config, store, run_id, session)

    def investigate_one(feature_id: str) -> FeatureWork:
        reason = investigation.investigate(feature_id)
        log.info("%s: stopped (%s)", feature_id, reason)
        if reason == "no explanation":
            return FeatureWork.skipped(feature_id, "no explanation to test")
        return FeatureWork(feature_id, reason=reason)

    return run_pool("experiment", targets, lambda f: f, investigate_one, store.write_results, concurrency=1)
