"""One experiment round on one feature: run the configured experiment kinds, then ask for a revision.

`Experimenter` touches no store: the experiment stage (`autointerp.experiments.stage`) feeds it a
run's explanations and exemplars, and the planted-feature benchmark feeds it planted features.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from autointerp.activations import normalize_activations
from autointerp.config import ExperimentConfig
from autointerp.experiments.kinds import EXPERIMENT_KINDS
from autointerp.experiments.proposals import (
    ask_for,
    parse_word_list,
)
from autointerp.explain.explainer import marked_text, parse_explanation
from autointerp.llm import CallRecorder, ChatBackend, get_backend
from autointerp.prompts import load_prompt
from autointerp.records import Experiment, Explanation
from autointerp.subject import SubjectModel
from autointerp.subject.interventions import (
    Edit,
)
from autointerp.subject.sources import FeatureSource


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

    def ask(
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
        kinds = [EXPERIMENT_KINDS.get(name)() for name in self.settings.kinds]
        in_model = target.edit() is not None
        kinds = [k for k in kinds if in_model or not k.needs_direction]
        if any(k.needs_output_prediction for k in kinds):
            values = {"explanation": explanation["text"]}
            step.predicted_words = self.ask(step, "propose", "predict_output", values, parse_word_list) or []
        for kind in kinds:
            kind.run(self, step)
        step.revision = self._revise(step)
        return step

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
        text = self.ask(step, "revise", "revise", values, parse_explanation, self.explainer)
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
