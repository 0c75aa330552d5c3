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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from autointerp.activations import normalize_activations
from autointerp.config import ExperimentConfig, RunConfig
from autointerp.experiment import (
    ask_for,
    experiment_row,
    minimal_pair_verdict,
    new_experiment_row,
    output_verdict,
    parse_word_list,
    propose_inputs,
    replacement_parser,
    run_input_experiment,
)
from autointerp.explain import marked_text, parse_explanation
from autointerp.llm import CallRecorder, ChatBackend, LLMSession, get_backend
from autointerp.metric_names import DISTRACTOR_SUFFIX, MAIN_METRIC
from autointerp.pipeline.common import attempted, load_subject
from autointerp.pipeline.pool import FeatureWork, StageResult, run_pool
from autointerp.pipeline.score import run_score
from autointerp.prompts import load_prompt
from autointerp.records import Experiment, Explanation, Rows
from autointerp.score.registry import SCORERS
from autointerp.store import Store
from autointerp.subject import SubjectModel
from autointerp.subject.features import FeatureSource, feature_source_for
from autointerp.subject.interventions import (
    Edit,
    generate_with_edit,
    kl_divergence,
    next_token_logprobs,
    top_changed_tokens,
)

log = logging.getLogger(__name__)

EXPERIMENT_ROLES = ("propose", "revise")
STEERING_PROMPTS = ("The", "In this section,", "I think that")
"""Neutral prompts whose next-token distribution steering is measured on."""


@dataclass
class FeatureTarget:
    """The feature under investigation, as the subject model sees it: its row and a source of it alone."""

    feature: dict[str, Any]
    source: FeatureSource

    def activations(self, ids: torch.Tensor) -> torch.Tensor:
        """Returns the feature's activations [batch, tokens] for token ids [batch, tokens]."""
        return self.source.activations(ids)[..., 0]

    def max_activation_of(self, subject: SubjectModel, text: str) -> float:
        """Returns the feature's largest activation on `text` (0 for an empty text)."""
        ids = subject.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        return 0.0 if ids.shape[1] == 0 else float(self.activations(ids).max())

    def edit(self, set_to: float | None = None, add: float = 0.0) -> Edit | None:
        """Returns the intervention on the feature, or None when it is no direction in the model."""
        return self.source.edit(0, set_to, add)


@dataclass
class Round:
    """One round on one explanation: its inputs, then the experiment rows, the lines for the
    reviser and the revision it produced."""

    target: FeatureTarget
    explanation: dict[str, Any]
    exemplars: list[dict[str, Any]]
    recorder: CallRecorder
    predicted_words: list[str] = field(default_factory=list)
    experiments: list[Experiment] = field(default_factory=list)
    results: list[str] = field(default_factory=list)
    revision: Explanation | None = None


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


class Experimenter:
    """Runs one experiment round on a feature and asks the explainer to revise.

    Touches no store: `Investigation` feeds it a run's explanations and exemplars, and the
    planted-feature benchmark feeds it planted features."""

    def __init__(
        self,
        settings: ExperimentConfig,
        subject: SubjectModel,
        explainer: ChatBackend,
        run_id: str,
        proposer: ChatBackend | None = None,
    ) -> None:
        self.settings, self.subject, self.explainer, self.run_id = settings, subject, explainer, run_id
        self.backend: ChatBackend = proposer or get_backend(settings.proposer.model)

    def _ask(
        self,
        step: Round,
        role: str,
        prompt: str,
        values: dict[str, Any],
        parse: Callable[[str], Any],
        backend: ChatBackend | None = None,
    ) -> Any:
        """Returns the parsed answer of the proposer (or `backend`) about the round's explanation, or None."""
        proposer, explanation = self.settings.proposer, step.explanation
        return ask_for(
            backend or self.backend,
            step.recorder,
            load_prompt(prompt),
            values,
            parse,
            role=role,
            feature_id=explanation["feature_id"],
            explanation_id=explanation["id"],
            max_tokens=proposer.max_tokens,
            temperature=proposer.temperature,
            retries=proposer.retries,
        )

    def run_round(
        self,
        target: FeatureTarget,
        explanation: dict[str, Any],
        exemplars: list[dict[str, Any]],
        recorder: CallRecorder,
    ) -> Round:
        """Returns the experiments of one round on `explanation` and the revised explanation (None
        when unchanged). `exemplars` (tokens, token_ids, activations, rank) are shown to the reviser
        and edited by the minimal-pair experiment."""
        step = Round(target=target, explanation=explanation, exemplars=exemplars, recorder=recorder)
        runners = {
            "input": self._input_experiment,
            "minimal_pair": self._minimal_pair,
            "ablation": self._ablation,
            "steering": self._steering,
        }
        in_model = target.edit() is not None
        kinds = [k for k in self.settings.kinds if in_model or k not in ("ablation", "steering")]
        if {"ablation", "steering"} & set(kinds):
            values = {"explanation": explanation["text"]}
            step.predicted_words = self._ask(step, "propose", "predict_output", values, parse_word_list) or []
        for kind in kinds:
            runners[kind](step)
        step.revision = self._revise(step)
        return step

    def _input_experiment(self, step: Round) -> None:
        target, explanation, exemplars = step.target, step.explanation, step.exemplars
        proposer = self.settings.proposer
        proposal = propose_inputs(
            self.backend,
            step.recorder,
            feature_id=target.feature["id"],
            explanation_id=explanation["id"],
            explanation=explanation["text"],
            exemplars=exemplars,
            max_activation=target.feature["max_activation"],
            per_side=self.settings.texts_per_side,
            max_tokens=proposer.max_tokens,
            temperature=proposer.temperature,
            retries=proposer.retries,
        )
        if proposal is None:
            return
        measured, verdict = run_input_experiment(
            proposal, lambda text: target.max_activation_of(self.subject, text), target.feature["max_activation"]
        )
        step.experiments.append(experiment_row(self.run_id, explanation["id"], proposal, measured, verdict))
        for side, should in (("activating", "should fire"), ("non_activating", "should not fire")):
            for item in measured[side]:
                step.results.append(f'"{item["text"]}" ({should}): {item["level"]:.0f}/10')

    def _minimal_pair(self, step: Round) -> None:
        target, explanation, exemplars = step.target, step.explanation, step.exemplars
        if not exemplars:
            return
        window = exemplars[0]
        position = max(range(len(window["activations"])), key=lambda i: window["activations"][i])
        token = window["tokens"][position]
        levels = normalize_activations(window["activations"], target.feature["max_activation"])
        values = {
            "explanation": explanation["text"],
            "marked_text": marked_text(window["tokens"], [10 if i == position else 0 for i in range(len(levels))]),
            "token": repr(token.strip() or token),
        }
        word = self._ask(step, "propose", "minimal_pair", values, replacement_parser(token))
        if word is None:
            return
        replacement = (" " if token.startswith(" ") else "") + word
        new_ids = self.subject.tokenizer(replacement, add_special_tokens=False)["input_ids"]
        ids = list(window["token_ids"])
        edited_ids = ids[:position] + new_ids + ids[position + 1 :]
        edited = target.activations(torch.tensor([edited_ids]))[0]
        original = float(target.activations(torch.tensor([ids]))[0, position])
        after = float(edited[position : position + len(new_ids)].max())
        verdict = minimal_pair_verdict(original, after)
        spec = {"window_rank": window["rank"], "position": position, "token": token, "replacement": replacement}
        measured = {
            "original_activation": original,
            "edited_activation": after,
            "edited_text": self.subject.tokenizer.decode(edited_ids),
        }
        step.experiments.append(
            new_experiment_row(
                self.run_id,
                explanation["id"],
                "minimal_pair",
                spec,
                {"activation": "drops by half or more"},
                measured,
                verdict,
            )
        )
        step.results.append(
            f"replacing {token.strip()!r} by {replacement.strip()!r}: "
            f"{10 * original / target.feature['max_activation']:.0f} -> "
            f"{10 * max(after, 0.0) / target.feature['max_activation']:.0f}/10"
        )

    def _ablation(self, step: Round) -> None:
        target, explanation, exemplars = step.target, step.explanation, step.exemplars
        if not exemplars:
            return
        ids = torch.tensor([e["token_ids"] for e in exemplars])
        value = 0.0 if self.settings.ablation == "zero" else float(target.feature["mean_activation"])
        edit = target.edit(set_to=value)
        clean = next_token_logprobs(self.subject, ids)
        ablated = next_token_logprobs(self.subject, ids, edit)
        kl = kl_divergence(clean, ablated)
        active = torch.tensor(
            [[a >= 0.1 * target.feature["max_activation"] for a in e["activations"]] for e in exemplars]
        )
        kl_active = float(kl[active].mean()) if active.any() else 0.0
        kl_inactive = float(kl[~active].mean()) if (~active).any() else 0.0
        promoted, suppressed = top_changed_tokens(self.subject, clean[active], ablated[active])
        verdict = output_verdict(kl_active, step.predicted_words, suppressed)
        spec = {"mode": self.settings.ablation, "value": value, "windows": [e["rank"] for e in exemplars]}
        measured = {"kl_active": kl_active, "kl_inactive": kl_inactive, "promoted": promoted, "suppressed": suppressed}
        step.experiments.append(
            new_experiment_row(
                self.run_id,
                explanation["id"],
                "ablation",
                spec,
                {"suppressed_words": step.predicted_words},
                measured,
                verdict,
            )
        )
        step.results.append(
            f"ablating the feature makes these next tokens less likely: {', '.join(t.strip() for t in suppressed[:5])}"
        )

    def _steering(self, step: Round) -> None:
        target, explanation = step.target, step.explanation
        prompts = [
            self.subject.tokenizer(p, add_special_tokens=False, return_tensors="pt")["input_ids"]
            for p in STEERING_PROMPTS
        ]

        def after_prompts(edit: Edit | None) -> torch.Tensor:
            """Next-token log-probs after each neutral prompt, [1, prompts, vocab]."""
            return torch.cat([next_token_logprobs(self.subject, ids, edit)[:, -1:] for ids in prompts], dim=1)

        clean = after_prompts(None)
        clean_generation = generate_with_edit(self.subject, STEERING_PROMPTS[0], None, max_new_tokens=10)
        for strength in self.settings.steering_strengths:
            added = strength * target.feature["max_activation"]
            edit = target.edit(add=added)
            steered = after_prompts(edit)
            promoted, suppressed = top_changed_tokens(self.subject, clean, steered)
            mean_kl = float(kl_divergence(clean, steered).mean())
            generations = {
                "clean": clean_generation,
                "steered": generate_with_edit(self.subject, STEERING_PROMPTS[0], edit, max_new_tokens=10),
            }
            verdict = output_verdict(mean_kl, step.predicted_words, promoted)
            spec = {"strength": strength, "added": added, "prompts": list(STEERING_PROMPTS)}
            measured = {"kl": mean_kl, "promoted": promoted, "suppressed": suppressed, "generations": generations}
            step.experiments.append(
                new_experiment_row(
                    self.run_id,
                    explanation["id"],
                    "steering",
                    spec,
                    {"promoted_words": step.predicted_words},
                    measured,
                    verdict,
                )
            )
            step.results.append(
                "steering the feature up makes these next tokens more likely: "
                + ", ".join(t.strip() for t in promoted[:5])
            )

    def _revise(self, step: Round) -> Explanation | None:
        """Returns the revised explanation, or None when there is nothing new to say."""
        target, explanation, exemplars, results = step.target, step.explanation, step.exemplars, step.results
        if not results:
            return None
        shown = [
            {
                "marked_text": marked_text(
                    e["tokens"], normalize_activations(e["activations"], target.feature["max_activation"])
                )
            }
            for e in exemplars
        ]
        values = {"explanation": explanation["text"], "exemplars": shown, "results": results}
        text = self._ask(step, "revise", "revise", values, parse_explanation, self.explainer)
        if text is None or text.strip().lower() == explanation["text"].strip().lower():
            return None
        call_ids = [r.id for r in step.recorder.rows if r.role == "revise" and r.error is None]
        return Explanation(
            run_id=self.run_id,
            feature_id=target.feature["id"],
            text=text,
            explainer=self.explainer.name,
            prompt_hash=load_prompt("revise").hash,
            llm_call_id=call_ids[-1] if call_ids else None,
            iteration=explanation["iteration"] + 1,
            parent_id=explanation["id"],
        )


class Investigation:
    """Runs experiment rounds on one run's features, reading and writing its store."""

    def __init__(self, config: RunConfig, store: Store, run_id: str, session: LLMSession) -> None:
        self.config, self.store, self.run_id, self.session = config, store, run_id, session
        self.settings = config.experiments
        self.subject = load_subject(config)
        self.experimenter = Experimenter(self.settings, self.subject, get_backend(config.explainer.model), run_id)

    def investigate(self, feature_id: str) -> str:
        """Runs rounds on one feature until a stop condition; returns why it stopped."""
        feature = next(f for f in self.store.features(self.run_id) if f["id"] == feature_id)
        target = FeatureTarget(feature, feature_source_for(self.config.features, self.subject, feature))
        exemplars = [e for e in self.store.exemplars(self.run_id, feature_id) if e["split"] == "explain"][:3]
        while True:
            chain = [e for e in self.store.explanations(self.run_id) if e["feature_id"] == feature_id]
            if not chain:
                return "no explanation"
            latest = max(chain, key=lambda e: e["iteration"])
            score = {s["explanation_id"]: s["value"] for s in self.store.scores(self.run_id, MAIN_METRIC)}.get(
                latest["id"]
            )
            if score is not None and score >= self.settings.score_threshold:
                return "threshold"
            if latest["iteration"] >= self.settings.max_rounds:
                return "budget"
            done = set().union(*(attempted(self.store, self.run_id, r, "explanation_id") for r in EXPERIMENT_ROLES))
            if latest["id"] in done:
                return "no change"
            outcome = self.experimenter.run_round(target, latest, exemplars, CallRecorder(self.run_id, self.session))
            rows = Rows(outcome.experiments)
            if outcome.revision is not None:
                rows.add(outcome.revision)
            rows.extend(outcome.recorder.take())
            self.store.write_results(rows)
            if outcome.revision is None:
                return "no change"
            rescored = run_score(self.config, self.store, self.run_id, self.session)
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
