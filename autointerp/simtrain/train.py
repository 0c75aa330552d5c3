"""Fine-tuning a local causal LM as an all-at-once simulator.

The prompt is exactly the scorer's (`LocalChatBackend.simulation_prompt` on the `simulate` template); the
loss is the cross-entropy of the digit tokens' distribution at each read position (the softmax over the
digits alone, as the scorer reads it) against the true level. Only LoRA matrices on the last blocks
train, so the blocks below run without a graph and the result is a few MB.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from autointerp.llm.adapter import LoRALinear, attach_lora
from autointerp.llm.adapter_spec import AdapterConfig
from autointerp.llm.base import ChatRequest
from autointerp.llm.local import LocalChatBackend
from autointerp.prompts import PromptTemplate
from autointerp.simtrain.examples import SimExample

log = logging.getLogger(__name__)

POSITIVE_WEIGHT = 3.0
"""Loss weight of tokens whose true level is above 0 (most tokens are 0)."""


@dataclass(frozen=True)
class TrainSettings:
    """How long and how hard to train."""

    epochs: int = 1
    batch_size: int = 8
    learning_rate: float = 8e-4
    warmup_steps: int = 20
    max_minutes: float | None = None
    """Stop after this many minutes of training (the schedule still decays as planned)."""
    seed: int = 0


@dataclass(frozen=True)
class EncodedExample:
    """Token ids of one prompt, the read positions, and the target class (digit index) at each."""

    ids: list[int]
    positions: list[int]
    targets: list[int]
    positive: int
    """How many targets are above 0."""


@dataclass
class TrainReport:
    """What training did and how the loss went."""

    steps: int
    examples_seen: int
    seconds: float
    train_loss: float | None
    heldout_loss_before: float | None
    heldout_loss_after: float | None
    stopped_early: bool


class SimulatorTrainer:
    """Holds the model with its LoRA layers and turns examples into a trained adapter."""

    def __init__(self, backend: LocalChatBackend, template: PromptTemplate, config: AdapterConfig, seed: int = 0):
        self.backend = backend
        self.template = template
        self.config = config
        self.model = copy.deepcopy(backend.subject.model)  # the shared model (maybe the subject) stays as it is
        digits = backend.digit_tokens()  # the classes the scorer's readout uses
        self.digit_values = list(digits)
        self.digit_ids = torch.tensor(list(digits.values()))
        self.adapted: dict[str, LoRALinear] = attach_lora(self.model, config, seed)
        self.first_trained = min(config.blocks)

    def encode(self, example: SimExample) -> EncodedExample:
        """Returns the example as the scorer would prompt it, with the digit class to predict per token."""
        messages, prefill = self.template.render(explanation=example.description)
        request = ChatRequest(messages=messages, prefill=prefill, max_tokens=1)
        ids, positions = self.backend.simulation_prompt(request, example.tokens)
        targets = [self._class_of(level) for level in example.levels]
        return EncodedExample(ids, positions, targets, sum(level > 0 for level in example.levels))

    def _class_of(self, level: int) -> int:
        """Returns the index of the nearest readable digit (a two-token "10" reads as 9)."""
        return min(range(len(self.digit_values)), key=lambda i: abs(self.digit_values[i] - level))

    def _layers(self) -> nn.ModuleList:
        return self.model.model.layers  # type: ignore[no-any-return]

    def digit_logits(self, batch: Sequence[EncodedExample]) -> list[torch.Tensor]:
        """Returns per example the digit logits [read positions, digits]; the blocks below the adapter run
        without a graph. Right padding with a causal mask leaves every real position unchanged."""
        inner = self.model.model
        device = self.backend.subject.device
        length = max(len(e.ids) for e in batch)
        pad = self.backend.subject.tokenizer.pad_token_id or 0
        ids = torch.full((len(batch), length), pad, dtype=torch.long, device=device)
        for row, example in enumerate(batch):
            ids[row, : len(example.ids)] = torch.tensor(example.ids, device=device)
        position_ids = torch.arange(length, device=device)[None]
        with torch.no_grad():
            hidden = inner.embed_tokens(ids)
            embeddings = inner.rotary_emb(hidden, position_ids=position_ids)
            for layer in self._layers()[: self.first_trained]:
                hidden = layer(hidden, attention_mask=None, position_ids=position_ids, position_embeddings=embeddings)
        for layer in self._layers()[self.first_trained :]:
            hidden = layer(hidden, attention_mask=None, position_ids=position_ids, position_embeddings=embeddings)
        hidden = inner.norm(hidden)
        head = self.model.get_output_embeddings().weight[self.digit_ids.to(device)]  # [digits, d]
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

    def mean_loss(self, examples: Sequence[EncodedExample], batch_size: int = 8) -> float | None:
        """Returns the loss over `examples` without training (None when there are none)."""
        if not examples:
            return None
        losses, count = 0.0, 0
        with torch.no_grad():
            for batch in _batches(examples, batch_size, shuffle=None):
                losses += float(self.batch_loss(batch)) * len(batch)
                count += len(batch)
        return losses / count

    def train(
        self,
        train: Sequence[EncodedExample],
        heldout: Sequence[EncodedExample],
        settings: TrainSettings,
        progress: Callable[[int, int, float], None] | None = None,
    ) -> TrainReport:
        """Trains the LoRA matrices on `train`; returns the steps taken and the held-out loss before and after.
        `progress(step, steps, loss)` is called after every step."""
        torch.manual_seed(settings.seed)
        parameters = [p for lora in self.adapted.values() for p in (lora.lora_a, lora.lora_b)]
        optimizer = torch.optim.AdamW(parameters, lr=settings.learning_rate, weight_decay=0.0)
        steps = settings.epochs * math.ceil(len(train) / settings.batch_size)

        def rate(step: int) -> float:
            warm = min(1.0, (step + 1) / max(settings.warmup_steps, 1))
            return warm * max(0.05, 1 - step / max(steps, 1))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
        before = self.mean_loss(heldout)
        started, step, seen, running, stopped = time.perf_counter(), 0, 0, None, False
        rng = random.Random(settings.seed)
        self.model.train()
        for _ in range(settings.epochs):
            for batch in _batches(train, settings.batch_size, shuffle=rng):
                loss = self.batch_loss(batch)
                optimizer.zero_grad()
                loss.backward()  # type: ignore[no-untyped-call]
                torch.nn.utils.clip_grad_norm_(parameters, 1.0)
                optimizer.step()
                scheduler.step()
                step, seen = step + 1, seen + len(batch)
                value = float(loss.detach())
                running = value if running is None else 0.9 * running + 0.1 * value
                if progress:
                    progress(step, steps, running)
                if settings.max_minutes is not None and time.perf_counter() - started > 60 * settings.max_minutes:
                    stopped = True
                    break
            if stopped:
                break
        self.model.eval()
        return TrainReport(
            steps=step,
            examples_seen=seen,
            seconds=round(time.perf_counter() - started, 1),
            train_loss=running,
            heldout_loss_before=before,
            heldout_loss_after=self.mean_loss(heldout),
            stopped_early=stopped,
        )


def _batches(
    examples: Sequence[EncodedExample], size: int, shuffle: random.Random | None
) -> list[list[EncodedExample]]:
    """Returns batches of similar-length examples (little padding), in random order when `shuffle` is given."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].ids))
    batches = [[examples[i] for i in order[start : start + size]] for start in range(0, len(order), size)]
    if shuffle is not None:
        shuffle.shuffle(batches)
    return batches
