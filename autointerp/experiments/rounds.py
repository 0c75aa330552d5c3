"""One experiment round on one feature: run the configured experiment kinds, then ask for a revision.

`Experimenter` touches no store: the experiment stage (`autointerp.experiments.stage`) feeds it a
run's explanations and exemplars, and the planted-feature benchmark feeds it planted features. Each
kind gets an `ExperimentContext` (the feature, the subject model, the explanation, a proposer), never
the experimenter itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autointerp.activations import normalize_activations
from autointerp.config import ExperimentConfig
from autointerp.experiments.context import ExperimentContext, FeatureTarget, Proposer
from autointerp.experiments.kinds import EXPERIMENT_KINDS
from autointerp.experiments.proposals import WORD_LIST_SHAPE, parse_word_list
from autointerp.explain.explainer import marked_text, parse_explanation
from autointerp.llm import CallRecorder, ChatBackend, get_backend
from autointerp.prompts import load_prompt
from autointerp.records import Experiment, Explanation
from autointerp.subject import SubjectModel

__all__ = ["Experimenter", "FeatureTarget", "Round"]


@dataclass
class Round:
    """One round on one explanation: what its kinds recorded, and the revision it produced."""

    context: ExperimentContext
    revision: Explanation | None = None

    @property
    def experiments(self) -> list[Experiment]:
        """The experiment rows of the round."""
        return self.context.experiments

    @property
    def results(self) -> list[str]:
        """The lines shown to the reviser."""
        return self.context.results

    @property
    def recorder(self) -> CallRecorder:
        """The recorder of the round's calls."""
        return self.context.proposer.recorder


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
        proposer = Proposer(
            self.backend, recorder, self.settings.proposer, explanation["feature_id"], explanation["id"]
        )
        context = ExperimentContext(target, self.subject, explanation, exemplars, proposer, self.settings, self.run_id)
        kinds = [EXPERIMENT_KINDS.get(name)() for name in self.settings.kinds]
        in_model = target.edit() is not None
        kinds = [k for k in kinds if in_model or not k.needs_direction]
        if any(k.needs_output_prediction for k in kinds):
            values = {"explanation": explanation["text"]}
            context.predicted_words = (
                proposer.ask("predict_output", values, parse_word_list, shape=WORD_LIST_SHAPE) or []
            )
        for kind in kinds:
            kind.run(context)
        return Round(context, self._revise(context))

    def _revise(self, context: ExperimentContext) -> Explanation | None:
        """Returns the revised explanation, or None when there is nothing new to say."""
        explanation, results = context.explanation, context.results
        if not results:
            return None
        max_activation = context.target.feature["max_activation"]
        shown = [
            {"marked_text": marked_text(e["tokens"], normalize_activations(e["activations"], max_activation))}
            for e in context.exemplars
        ]
        values = {"explanation": explanation["text"], "exemplars": shown, "results": results}
        reviser = context.proposer.using(self.explainer)  # the explainer revises, with the proposer's settings
        text = reviser.ask("revise", values, parse_explanation, role="revise")
        if text is None or text.strip().lower() == explanation["text"].strip().lower():
            return None
        call_ids = [r.id for r in reviser.recorder.rows if r.role == "revise" and r.error is None]
        return Explanation(
            run_id=self.run_id,
            feature_id=context.target.feature["id"],
            text=text,
            explainer=self.explainer.name,
            prompt_hash=load_prompt("revise").hash,
            llm_call_id=call_ids[-1] if call_ids else None,
            iteration=explanation["iteration"] + 1,
            parent_id=explanation["id"],
        )
