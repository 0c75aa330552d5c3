"""What an experiment kind gets for one round: the feature, the subject model, the round's explanation,
a proposer to ask, and lists that record what it found.

A kind (`autointerp.experiments.kinds`) reads and fills an `ExperimentContext` and knows nothing of
the round driver (`autointerp.experiments.rounds`), which builds the context, runs the kinds and asks
for a revision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch

from autointerp.config import ExperimentConfig, LLMRoleConfig
from autointerp.errors import LLMError
from autointerp.llm.base import ChatBackend, ChatMessage, ChatRequest
from autointerp.llm.calls import CallRecorder
from autointerp.prompts import load_prompt
from autointerp.records import Experiment
from autointerp.subject.interventions import Edit
from autointerp.subject.model import SubjectModel
from autointerp.subject.sources import FeatureSource

Verdict = Literal["supports", "refutes", "inconclusive"]
"""What a rule says of an experiment's prediction."""


@dataclass
class FeatureTarget:
    """The feature under investigation, as the subject model sees it: its row and a source of it alone."""

    feature: dict[str, Any]
    source: FeatureSource

    def activations(self, ids: torch.Tensor) -> torch.Tensor:
        """Returns the feature's activations [batch, tokens] for token ids [batch, tokens]."""
        return self.source.activations(ids)[..., 0]

    def max_activation_of(self, subject: SubjectModel, text: str) -> float:
        """Returns the feature's largest activation on `text` (0 for an empty text), over every one of its
        tokens: when the source skips each sequence's first tokens, start tokens go before the text."""
        ids = subject.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        if ids.shape[1] == 0:
            return 0.0
        skipped = self.source.skipped_tokens
        start = torch.full((ids.shape[0], skipped), subject.start_token_id, dtype=ids.dtype)
        return float(self.activations(torch.cat([start, ids], dim=1))[:, skipped:].max())

    def edit(self, set_to: float | None = None, add: float = 0.0) -> Edit | None:
        """Returns the intervention on the feature, or None when it is no direction in the model."""
        return self.source.edit(0, set_to, add)


@dataclass(frozen=True)
class Proposer:
    """A model asked about one explanation, with the proposer's settings (`experiments.proposer`); every
    call goes through the round's recorder."""

    backend: ChatBackend
    recorder: CallRecorder
    settings: LLMRoleConfig
    """Most tokens, temperature and retries of each question."""
    feature_id: str
    explanation_id: str

    def using(self, backend: ChatBackend) -> Proposer:
        """Returns the same questioner with another model (the explainer, for the revision)."""
        return replace(self, backend=backend)

    def ask(
        self,
        prompt: str,
        values: dict[str, Any],
        parse: Callable[[str], Any],
        role: str = "propose",
        shape: str | None = None,
    ) -> Any:
        """Returns `parse(answer)` for the first parseable answer to the template `prompt` rendered with
        `values`, or None after `settings.retries` more tries; every call is recorded, an unparseable
        answer marked as an error and shown to the model with the reason. `shape` names the answer's shape
        (`autointerp.llm.guided.ANSWER_SHAPES`): a local model's decoding is kept to it."""
        template = load_prompt(prompt)
        messages, prefill = template.render(**values)
        settings = self.settings
        for _ in range(settings.retries + 1):
            request = ChatRequest(
                messages=messages,
                max_tokens=settings.max_tokens,
                temperature=settings.temperature,
                prefill=prefill,
                shape=shape,
            )
            response, call_id = self.recorder.call(
                self.backend,
                request,
                role=role,
                prompt_hash=template.hash,
                feature_id=self.feature_id,
                explanation_id=self.explanation_id,
            )
            if response is None:
                continue
            try:
                return parse(response.text)
            except LLMError as exc:
                self.recorder.mark_error(call_id, f"unparseable answer: {exc}")
                messages = [
                    *messages,
                    ChatMessage(role="assistant", content=prefill + response.text),
                    ChatMessage(role="user", content=f"That answer cannot be used: {exc}. Try again."),
                ]
        return None


@dataclass
class ExperimentContext:
    """One round's view of a feature for the experiment kinds, and what they record."""

    target: FeatureTarget
    subject: SubjectModel
    """The subject model: its tokenizer, next-token log-probabilities and generation under an edit."""
    explanation: dict[str, Any]
    """The explanation under test (a row: id, feature_id, text, iteration)."""
    exemplars: list[dict[str, Any]]
    """Explanation-split windows (tokens, token_ids, activations, rank), shown and edited."""
    proposer: Proposer
    settings: ExperimentConfig
    """The `experiments` section: texts per side, ablation mode, steering strengths."""
    run_id: str
    predicted_words: list[str] = field(default_factory=list)
    """The proposer's predicted output words, asked once when a kind needs them."""
    experiments: list[Experiment] = field(default_factory=list)
    results: list[str] = field(default_factory=list)
    """Lines for the reviser, one per measured fact."""

    @property
    def max_activation(self) -> float:
        """Returns the feature's largest activation over the corpus."""
        return float(self.target.feature["max_activation"])

    def record(
        self, kind: str, spec: dict[str, Any], predicted: dict[str, Any], measured: dict[str, Any], verdict: Verdict
    ) -> None:
        """Adds one experiment on the round's explanation."""
        self.experiments.append(
            Experiment(
                run_id=self.run_id,
                explanation_id=self.explanation["id"],
                kind=kind,
                spec=spec,
                predicted=predicted,
                measured=measured,
                verdict=verdict,
            )
        )
