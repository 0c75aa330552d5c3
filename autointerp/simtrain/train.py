"""Fine-tuning a local causal LM as an all-at-once simulator.

The prompt is exactly the scorer's (`LocalChatBackend.simulation_prompt` on the `simulate` template); the
loss is the cross-entropy of the digit tokens' distribution at each read position (the softmax over the
digits alone, as the scorer reads it) against the true level. Only LoRA matrices on the last blocks
train, so the blocks below run without a graph and the result is a few MB.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from autointerp.llm.adapter_spec import AdapterConfig
from autointerp.llm.base import ChatRequest
from autointerp.llm.local import LocalChatBackend
from autointerp.prompts import PromptTemplate
from autointerp.simtrain.examples import SimExample
from autointerp.simtrain.lora import LoRATrainer, TrainReport, TrainSettings

__all__ = ["EncodedExample", "SimulatorTrainer", "TrainReport", "TrainSettings"]

log = logging.getLogger(__name__)

POSITIVE_WEIGHT = 3.0
"""Loss weight of tokens whose true level is above 0 (most tokens are 0)."""


@dataclass(frozen=True)
class EncodedExample:
    """Token ids of one prompt, the read positions, and the target class (digit index) at each."""

    ids: list[int]
    positions: list[int]
    targets: list[int]
    positive: int
    """How many targets are above 0."""


class SimulatorTrainer(LoRATrainer[EncodedExample]):
    """Holds the model with its LoRA layers and turns simulation examples into a trained adapter."""

    def __init__(self, backend: LocalChatBackend, template: PromptTemplate, config: AdapterConfig, seed: int = 0):
        super().__init__(backend, config, seed)
        self.template = template
        digits = backend.digit_tokens()  # the classes the scorer's readout uses
        self.digit_values = list(digits)
        self.digit_ids = torch.tensor(list(digits.values()))

    def encode(self, example: SimExample) -> EncodedExample:
        """Returns the example as the scorer would prompt it, with the digit class to predict per token."""
        messages, prefill = self.template.render(explanation=example.description)
        request = ChatRequest(messages=messages, prefill=prefill, max_tokens=1)
        ids, positions = self.backend.simulation_prompt(request, example.tokens, self.config.lines)
        targets = [self._class_of(level) for level in example.levels]
        return EncodedExample(ids, positions, targets, sum(level > 0 for level in example.levels))

    def _class_of(self, level: int) -> int:
        """Returns the index of the nearest readable digit (a two-token "10" reads as 9)."""
        return min(range(len(self.digit_values)), key=lambda i: abs(self.digit_values[i] - level))

    def digit_logits(self, batch: Sequence[EncodedExample]) -> list[torch.Tensor]:
        """Returns per example the digit logits [read positions, digits]."""
        hidden = self.hidden_states(batch)
        head = self.model.get_output_embeddings().weight[self.digit_ids.to(hidden.device)]  # [digits, d]
        return [hidden[row, example.positions] @ head.T for row, example in enumerate(batch)]

    def batch_loss(self, batch: Sequence[EncodedExample]) -> torch.Tensor:
        """Returns the weighted mean cross-entropy of the digit distributions against the true levels."""
        total, weight = torch.zeros(()), 0.0
        for logits, example in zip(self.digit_logits(batch), batch, strict=True):
            targets = torch.tensor(example.targets, device=logits.device)
            weights = torch.where(targets > 0, POSITIVE_WEIGHT, 1.0)
            losses = nn.functional.cross_entropy(logits.float(), targets, reduction="none")
            total = total + (losses * weights).sum().cpu()
            weight += float(weights.sum())
        return total / max(weight, 1.0)
