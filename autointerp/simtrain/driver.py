"""The steps `train-simulator` and `train-explainer` share around their own examples and trainer: the local
base model with the synthetic family members cut from the corpus, the adapter's config, progress lines, and
what adapter.json records about the training."""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from autointerp.llm import get_backend
from autointerp.llm.adapter_spec import ADAPTER_SEPARATOR, AdapterConfig
from autointerp.llm.local import LocalChatBackend
from autointerp.simtrain.data import corpus_window_sets, split_members
from autointerp.simtrain.families import SyntheticFeature, synthetic_features
from autointerp.simtrain.lora import TrainReport, TrainSettings

Echo = Callable[[str], None]
Progress = Callable[[int, int, float], None]


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


def load_family_data(
    command: str,
    base: str,
    corpus: str,
    window_sizes: Sequence[int],
    windows_per_size: int,
    words: int,
    max_members: int | None,
    seed: int,
) -> FamilyData:
    """Returns the local base model and the family members on `corpus`'s windows, split into trained and held
    out; raises TypeError when `base` is not a local model (`command` names the command in the message)."""
    backend = get_backend(f"local:{base}")
    if not isinstance(backend, LocalChatBackend):
        raise TypeError(f"{command} needs a local model")
    window_sets = corpus_window_sets(backend.subject, corpus, window_sizes, windows_per_size)
    members = synthetic_features(window_sets[0], words)
    train_members, heldout_members = split_members(members, max_members, seed)
    return FamilyData(backend, window_sets, members, train_members, heldout_members)


def say_examples(data: FamilyData, train_examples: int, heldout_examples: int, echo: Echo) -> None:
    """Tells how many members and examples training uses."""
    echo(
        f"{len(data.train_members)} training and {len(data.heldout_members)} held-out family members "
        f"({', '.join(data.families)}); {train_examples} training and {heldout_examples} held-out examples"
    )


def new_adapter_config(
    data: FamilyData, base: str, rank: int, alpha: float, blocks: int, **fields: Any
) -> AdapterConfig:
    """Returns the config of an adapter on the top `blocks` blocks of the base model (`fields`: prompt, lines)."""
    layers = int(data.backend.subject.model.config.num_hidden_layers)
    return AdapterConfig(
        base_model=base, rank=rank, alpha=alpha, blocks=list(range(max(0, layers - blocks), layers)), **fields
    )


def progress_lines(started: float, echo: Echo) -> Progress:
    """Returns a training progress callback that echoes the step and loss at most every 30 s, and at the end."""
    last = [0.0]

    def progress(step: int, steps: int, loss: float) -> None:
        if step == steps or time.perf_counter() - last[0] > 30:
            last[0] = time.perf_counter()
            echo(f"step {step}/{steps}  loss {loss:.3f}  ({time.perf_counter() - started:.0f} s)")

    return progress


def training_record(
    command: str,
    prompt_hash: str,
    corpus: str,
    window_sizes: Sequence[int],
    data: FamilyData,
    train_examples: int,
    distill: Sequence[tuple[Path, str]],
    settings: TrainSettings,
    report: TrainReport,
    **extra: Any,
) -> dict[str, Any]:
    """Returns what adapter.json's `training` section records: the command line, prompt hash, corpus, members,
    examples, distilled runs, settings and report, and `extra` (each trainer's own facts)."""
    return {
        "command": f"autointerp {command} " + shlex.join(sys.argv[2:]) if len(sys.argv) > 1 else "",
        "prompt_hash": prompt_hash,
        "corpus": corpus,
        "window_sizes": list(window_sizes),
        "families": data.families,
        "train_members": len(data.train_members),
        "heldout_members": sorted(m.name for m in data.heldout_members),
        "train_examples": train_examples,
        "distilled_from": [f"{db}#{run}" for db, run in distill],
        "benchmark_features_trained_on": 0,
        "settings": asdict(settings),
        "report": asdict(report),
        **extra,
    }


def say_trained(report: TrainReport, echo: Echo) -> None:
    """Tells the steps, examples, seconds and held-out loss before and after."""
    echo(
        f"trained {report.steps} steps on {report.examples_seen} examples in {report.seconds:.0f} s; held-out loss "
        f"{format_loss(report.heldout_loss_before)} -> {format_loss(report.heldout_loss_after)}"
    )


def say_written(out: Path, base: str, setting: str, echo: Echo) -> None:
    """Tells where the adapter is and the setting (`setting`) that uses it."""
    echo(f'wrote {out}. Use it with {setting} = "local:{out}"')
    echo(f'  (or "local:{base}{ADAPTER_SEPARATOR}{out}")')


def format_loss(value: float | None) -> str:
    """Returns a loss or score with three decimals, or `n/a`."""
    return "n/a" if value is None else f"{value:.3f}"
