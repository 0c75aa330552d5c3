"""Fine-tuning a local causal LM as the explainer: the loss is the cross-entropy of the answer's tokens
(the description, a full stop and the end of the turn) after the explain stage's own prompt and prefill,
so the trained model answers the stage's prompt with a description and stops."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from autointerp.explaintrain.examples import ExplainExample
from autointerp.simtrain.lora import LoRATrainer


@dataclass(frozen=True)
class EncodedAnswer:
    """Token ids of the prompt followed by the answer; `start` is the answer's first position."""

    ids: list[int]
    start: int


def answer_text(description: str) -> str:
    """Returns what the explainer should write after the prefill ("The neuron fires on"): ` <description>.`"""
    return " " + description.strip().rstrip(".") + "."


class ExplainerTrainer(LoRATrainer[EncodedAnswer]):
    """Holds the model with its LoRA layers and turns explain examples into a trained adapter."""

    def encode(self, example: ExplainExample) -> EncodedAnswer:
        """Returns the stage's prompt for the example's windows followed by the answer and end of turn."""
        request = example.request()
        prompt = self.backend.prompt_ids(request.messages, request.prefill)
        tokenizer = self.backend.subject.tokenizer
        answer = list(tokenizer(answer_text(example.description), add_special_tokens=False)["input_ids"])
        end = tokenizer.eos_token_id
        return EncodedAnswer(prompt + answer + ([end] if end is not None else []), len(prompt))

    def answer_logits(self, batch: Sequence[EncodedAnswer]) -> list[torch.Tensor]:
        """Returns per example the logits [answer tokens, vocabulary] predicting each answer token."""
        hidden = self.hidden_states(batch)
        head = self.model.get_output_embeddings().weight
        return [hidden[row, e.start - 1 : len(e.ids) - 1] @ head.T for row, e in enumerate(batch)]

    def batch_loss(self, batch: Sequence[EncodedAnswer]) -> torch.Tensor:
        """Returns the mean cross-entropy per answer token over the batch."""
        total, count = torch.zeros(()), 0
        for logits, example in zip(self.answer_logits(batch), batch, strict=True):
            targets = torch.tensor(example.ids[example.start :], device=logits.device)
            total = total + nn.functional.cross_entropy(logits.float(), targets, reduction="sum").cpu()
            count += len(targets)
        return total / max(count, 1)
