"""Experiment kinds see an `ExperimentContext`, never the round driver: a kind registered in code runs
through `Experimenter.run_round` with scripted models and no subject model, and the kinds module does
not import the rounds module (no circle)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, ClassVar

import torch

import autointerp.experiments.kinds as kinds_module
from autointerp.config import ExperimentConfig, LLMConfig, RunConfig
from autointerp.experiments.context import ExperimentContext, FeatureTarget
from autointerp.experiments.kinds import EXPERIMENT_KINDS, ExperimentKind
from autointerp.experiments.rounds import Experimenter
from autointerp.llm import CallRecorder, ChatBackend, ChatRequest, ChatResponse, LLMSession
from autointerp.subject.sources import FeatureSource


class Scripted(ChatBackend):
    """Answers every request with `answer`; keeps the prompts it saw."""

    backend = "scripted"

    def __init__(self, model: str, answer: str) -> None:
        super().__init__(model)
        self.answer = answer
        self.prompts: list[str] = []

    def generate(self, request: ChatRequest) -> ChatResponse:
        self.prompts.append(request.messages[-1].content)
        return ChatResponse(text=self.answer, input_tokens=1, output_tokens=1)


class NoDirection(FeatureSource):
    """A feature that is no direction in the model (as a planted one): kinds that edit the model skip it."""

    kind = "planted"

    def activations(self, token_ids: torch.Tensor) -> torch.Tensor:
        return torch.zeros(*token_ids.shape, 1)


class AskOnce(ExperimentKind):
    """Asks the proposer for one sentence and records it as its measurement."""

    name: ClassVar[str] = "ask-once"

    def run(self, context: ExperimentContext) -> None:
        sentence = context.proposer.ask("minimal_pair", {**VALUES, "explanation": context.explanation["text"]}, str)
        context.record("ask-once", {"asked": True}, {"answer": "any"}, {"answer": sentence}, "inconclusive")
        context.results.append(f"the proposer said {sentence!r}")


VALUES: dict[str, Any] = {"marked_text": "a <<cat>>", "token": "' cat'"}


def test_a_kind_reads_and_fills_its_context_only() -> None:
    EXPERIMENT_KINDS.register("ask-once", AskOnce)
    # config validation lists the entry points; a kind registered in code is set past it
    settings = ExperimentConfig().model_copy(update={"kinds": ["ask-once", "steering"]})
    proposer, explainer = Scripted("p", "dog"), Scripted("e", "cats and kittens.")
    experimenter = Experimenter(settings, None, explainer, "run", proposer=proposer)  # type: ignore[arg-type]
    target = FeatureTarget({"id": "planted/cat", "max_activation": 1.0}, NoDirection(["planted/cat"], ["-"], [0]))
    explanation = {"id": "e1", "feature_id": "planted/cat", "text": "cats", "iteration": 0}
    exemplars = [{"tokens": ["a", " cat"], "activations": [0.0, 1.0], "token_ids": [1, 2], "rank": 0}]
    recorder = CallRecorder("run", LLMSession.from_settings(LLMConfig(cache=False)))
    outcome = experimenter.run_round(target, explanation, exemplars, recorder)
    [experiment] = outcome.experiments  # steering needs a direction in the model: skipped
    assert (experiment.kind, experiment.measured, experiment.explanation_id) == ("ask-once", {"answer": "dog"}, "e1")
    assert outcome.results == ["the proposer said 'dog'"]
    assert outcome.revision is not None and outcome.revision.text == "cats and kittens"
    assert (outcome.revision.parent_id, outcome.revision.iteration) == ("e1", 1)
    assert [r.role for r in recorder.rows] == ["propose", "revise"]
    assert "the proposer said 'dog'" in explainer.prompts[0]


def test_kinds_check_themselves_and_do_not_import_the_round_driver() -> None:
    assert all(EXPERIMENT_KINDS.get(name)().check(RunConfig()) == [] for name in EXPERIMENT_KINDS.names())
    tree = ast.parse(Path(kinds_module.__file__).read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "autointerp.experiments.rounds" not in imported
    assert "autointerp.experiments.context" in imported
