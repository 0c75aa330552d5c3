"""The steps `train-simulator` and `train-explainer` share around their own examples and trainer: the local
base model with the synthetic family members cut from the corpus, the adapter's config, and training, saving
and measuring the adapter with what adapter.json records about it."""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from autointerp.llm import get_backend
from autointerp.llm.adapter import LoRALinear, save_adapter, write_adapter_config
from autointerp.llm.adapter_spec import ADAPTER_SEPARATOR, AdapterConfig
from autointerp.llm.local import LocalChatBackend
from autointerp.simtrain.data import corpus_window_sets, split_members
from autointerp.simtrain.families import SyntheticFeature, synthetic_features
from autointerp.simtrain.lora import TrainReport, TrainSettings

Echo = Callable[[str], None]
Progress = Callable[[int, int, float], None]


class AdapterPlan(Protocol):
    """What both training plans (`SimulatorTrainingPlan`, `ExplainerTrainingPlan`) hold for the shared steps."""

    out: Path
    base: str
    corpus: str
    window_sizes: tuple[int, ...]
    windows_per_size: int
    words: int
    blocks: int
    rank: int
    alpha: float
    train: TrainSettings
    distill: list[tuple[Path, str]]
    evaluate: bool
    max_members: int | None


class ExampleTrainer(Protocol):
    """A LoRA trainer that encodes its own kind of example (`SimulatorTrainer`, `ExplainerTrainer`)."""

    config: AdapterConfig
    adapted: dict[str, LoRALinear]

    def encode(self, example: Any) -> Any: ...

    def train(
        self, train: Sequence[Any], heldout: Sequence[Any], settings: TrainSettings, progress: Progress | None = None
    ) -> TrainReport: ...


@dataclass
class FamilyData:
    """The base model to train and the family members both trainers draw their examples from."""

    backend: LocalChatBackend
    window_sets: list[list[list[str]]]
    """Per window length, the corpus windows as decoded tokens."""
    members: list[SyntheticFeature]
    train_members: list[SyntheticFeature]
    heldout_members: list[SyntheticFeature]

    @property
    def families(self) -> list[str]:
        """Returns the names of the families the members belong to, sorted."""
        return sorted({m.family for m in self.members})


def load_family_data(command: str, plan: AdapterPlan) -> FamilyData:
    """Returns the local base model and the family members on the corpus's windows, split into trained and held
    out; raises TypeError when `plan.base` is not a local model (`command` names the command in the message)."""
    backend = get_backend(f"local:{plan.base}")
    if not isinstance(backend, LocalChatBackend):
        raise TypeError(f"{command} needs a local model")
    window_sets = corpus_window_sets(backend.subject, plan.corpus, plan.window_sizes, plan.windows_per_size)
    members = synthetic_features(window_sets[0], plan.words)
    train_members, heldout_members = split_members(members, plan.max_members, plan.train.seed)
    return FamilyData(backend, window_sets, members, train_members, heldout_members)


def new_adapter_config(data: FamilyData, plan: AdapterPlan, **fields: Any) -> AdapterConfig:
    """Returns the config of an adapter on the plan's top blocks of the base model (`fields`: prompt, lines)."""
    layers = int(data.backend.subject.model.config.num_hidden_layers)
    return AdapterConfig(
        base_model=plan.base,
        rank=plan.rank,
        alpha=plan.alpha,
        blocks=list(range(max(0, layers - plan.blocks), layers)),
        **fields,
    )


def train_and_save(
    command: str,
    plan: AdapterPlan,
    data: FamilyData,
    trainer: ExampleTrainer,
    examples: tuple[Sequence[Any], Sequence[Any]],
    prompt_hash: str,
    *,
    started: float,
    setting: str,
    measure: Callable[[], dict[str, Any]],
    echo: Echo,
    **extra: Any,
) -> dict[str, Any]:
    """Trains on (training, held-out) `examples`, saves the adapter to `plan.out` and, when `plan.evaluate` is
    on, adds `measure()`'s numbers to it; tells what it does (`setting`: the config key that uses the adapter;
    progress lines count seconds from `started`, the command's start).
    Returns adapter.json's `training` section: the command line, prompt hash, corpus, members, examples,
    distilled runs, settings, report, evaluation and `extra` (each trainer's own facts)."""
    train_examples, heldout_examples = examples
    echo(
        f"{len(data.train_members)} training and {len(data.heldout_members)} held-out family members "
        f"({', '.join(data.families)}); {len(train_examples)} training and {len(heldout_examples)} held-out examples"
    )
    encoded = [trainer.encode(e) for e in train_examples]
    heldout_encoded = [trainer.encode(e) for e in heldout_examples]
    report = trainer.train(encoded, heldout_encoded, plan.train, _progress_lines(started, echo))
    training: dict[str, Any] = {
        "command": f"autointerp {command} " + shlex.join(sys.argv[2:]) if len(sys.argv) > 1 else "",
        "prompt_hash": prompt_hash,
        "corpus": plan.corpus,
        "window_sizes": list(plan.window_sizes),
        "families": data.families,
        "train_members": len(data.train_members),
        "heldout_members": sorted(m.name for m in data.heldout_members),
        "train_examples": len(train_examples),
        "distilled_from": [f"{db}#{run}" for db, run in plan.distill],
        "benchmark_features_trained_on": 0,
        "settings": asdict(plan.train),
        "report": asdict(report),
        **extra,
    }
    trainer.config.training = training
    save_adapter(plan.out, trainer.config, trainer.adapted)
    echo(
        f"trained {report.steps} steps on {report.examples_seen} examples in {report.seconds:.0f} s; held-out loss "
        f"{format_loss(report.heldout_loss_before)} -> {format_loss(report.heldout_loss_after)}"
    )
    if plan.evaluate:
        training["evaluation"] = measure()
        write_adapter_config(plan.out, trainer.config)
    echo(f'wrote {plan.out}. Use it with {setting} = "local:{plan.out}"')
    echo(f'  (or "local:{plan.base}{ADAPTER_SEPARATOR}{plan.out}")')
    return training


def _progress_lines(started: float, echo: Echo) -> Progress:
    """Returns a training progress callback that echoes the step and loss at most every 30 s, and at the end."""
    last = [0.0]

    def progress(step: int, steps: int, loss: float) -> None:
        if step == steps or time.perf_counter() - last[0] > 30:
            last[0] = time.perf_counter()
            echo(f"step {step}/{steps}  loss {loss:.3f}  ({time.perf_counter() - started:.0f} s)")

    return progress


def format_loss(value: float | None) -> str:
    """Returns a loss or score with three decimals, or `n/a`."""
    return "n/a" if value is None else f"{value:.3f}"
