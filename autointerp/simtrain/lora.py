"""What the simulator's and the explainer's LoRA training share: a private copy of the local model with LoRA
layers on its last blocks, a forward pass whose blocks below the adapter run without a graph, and a
training loop (AdamW, warm-up, linear decay by steps or by time, held-out loss before and after).

A subclass says how a batch of its encoded examples gives a loss (`batch_loss`).
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import torch
from torch import nn

from autointerp.llm.adapter import LoRALinear, attach_lora
from autointerp.llm.adapter_spec import AdapterConfig
from autointerp.llm.local import LocalChatBackend


@dataclass(frozen=True)
class TrainSettings:
    """How long and how hard to train."""

    epochs: int = 1
    batch_size: int = 8
    learning_rate: float = 8e-4
    warmup_steps: int = 20
    max_minutes: float | None = None
    """Stop after this many minutes of training; the learning rate then decays with the time spent as well
    as with the steps taken (whichever is further along), so a time-bounded run still ends at a low rate."""
    seed: int = 0


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


class Encoded(Protocol):
    """An encoded example: at least its prompt's token ids (batches group similar lengths)."""

    @property
    def ids(self) -> list[int]: ...


E = TypeVar("E", bound=Encoded)


class LoRATrainer(Generic[E]):
    """Holds a private copy of the backend's model with LoRA layers; `train` fits them to examples."""

    def __init__(self, backend: LocalChatBackend, config: AdapterConfig, seed: int = 0):
        self.backend = backend
        self.config = config
        self.model = copy.deepcopy(backend.subject.model)  # the shared model (maybe the subject) stays as it is
        self.adapted: dict[str, LoRALinear] = attach_lora(self.model, config, seed)
        self.first_trained = min(config.blocks)

    def _layers(self) -> nn.ModuleList:
        return self.model.model.layers  # type: ignore[no-any-return]

    def hidden_states(self, batch: Sequence[E]) -> torch.Tensor:
        """Returns the final-norm hidden states [batch, length, d] of the right-padded batch; the blocks
        below the adapter run without a graph. Right padding with a causal mask leaves every real
        position unchanged."""
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
        return inner.norm(hidden)  # type: ignore[no-any-return]

    def batch_loss(self, batch: Sequence[E]) -> torch.Tensor:
        """Returns the batch's mean loss (a scalar with a graph to the LoRA matrices)."""
        raise NotImplementedError

    def mean_loss(self, examples: Sequence[E], batch_size: int = 8) -> float | None:
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
        train: Sequence[E],
        heldout: Sequence[E],
        settings: TrainSettings,
        progress: Callable[[int, int, float], None] | None = None,
    ) -> TrainReport:
        """Trains the LoRA matrices on `train`; returns the steps taken and the held-out loss before and after.
        `progress(step, steps, loss)` is called after every step."""
        torch.manual_seed(settings.seed)
        parameters = [p for lora in self.adapted.values() for p in (lora.lora_a, lora.lora_b)]
        optimizer = torch.optim.AdamW(parameters, lr=settings.learning_rate, weight_decay=0.0)
        steps = settings.epochs * math.ceil(len(train) / settings.batch_size)
        started = time.perf_counter()

        def rate(step: int) -> float:
            warm = min(1.0, (step + 1) / max(settings.warmup_steps, 1))
            done = step / max(steps, 1)
            if settings.max_minutes is not None and step > 0:
                done = max(done, (time.perf_counter() - started) / (60 * settings.max_minutes))
            return warm * max(0.05, 1 - done)

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


def _batches(examples: Sequence[E], size: int, shuffle: random.Random | None) -> list[list[E]]:
    """Returns batches of similar-length examples (little padding), in random order when `shuffle` is given."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].ids))
    batches = [[examples[i] for i in order[start : start + size]] for start in range(0, len(order), size)]
    if shuffle is not None:
        shuffle.shuffle(batches)
    return batches
