"""`autointerp train-simulator`: synthetic families (and optionally a run to distil) -> a LoRA simulator."""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from autointerp.bench import BenchSettings
from autointerp.llm import get_backend
from autointerp.llm.adapter import save_adapter, write_adapter_config
from autointerp.llm.adapter_spec import ADAPTER_SEPARATOR, AdapterConfig
from autointerp.llm.local import LocalChatBackend
from autointerp.prompts import load_prompt
from autointerp.simtrain.data import corpus_window_sets, split_members
from autointerp.simtrain.distill import distill_examples
from autointerp.simtrain.evaluate import SimulatorEvaluation, evaluate_simulator
from autointerp.simtrain.examples import SimExample, build_examples
from autointerp.simtrain.families import SyntheticFeature, synthetic_features
from autointerp.simtrain.train import SimulatorTrainer, TrainSettings
from autointerp.subject.planted import BUILTIN_PLANTED_FEATURES


@dataclass
class SimulatorTrainingPlan:
    """Everything `train-simulator` needs; the defaults train the shipped simulator (~30 min on 2 CPU cores)."""

    out: Path
    base: str = "smollm2-135m"
    corpus: str = "builtin:python-docs"
    window_sizes: tuple[int, ...] = (12,)
    """Window lengths cut from the corpus (the benchmark uses 12, runs 32 by default; longer windows cost
    proportionally more CPU time per example)."""
    windows_per_size: int = 1536
    words: int = 120
    """Single-word members, chosen among the corpus's frequent words."""
    active_per_member: int = 3
    quiet_per_member: int = 1
    cross_per_member: int = 2
    heldout_examples: int = 64
    """Held-out examples kept to measure the loss before and after."""
    blocks: int = 8
    """Adapted blocks, counted from the top of the model."""
    rank: int = 16
    alpha: float = 32.0
    train: TrainSettings = field(default_factory=TrainSettings)
    distill: list[tuple[Path, str]] = field(default_factory=list)
    """(DuckDB file, run id) pairs whose simulator predictions are added to the training data."""
    distill_only: bool = False
    """Train on the distilled examples alone (no synthetic families)."""
    teacher: str | None = None
    """Keep only this simulator's predictions when distilling."""
    evaluate: bool = True
    """Measure the untrained and trained simulators on held-out families and the planted benchmark."""
    max_members: int | None = None
    """Use at most this many training members (tests)."""


Echo = Callable[[str], None]


def train_simulator(plan: SimulatorTrainingPlan, echo: Echo = print) -> dict[str, Any]:
    """Trains, saves and (unless `plan.evaluate` is off) measures a simulator adapter; returns what was
    written into its adapter.json `training` section."""
    started = time.perf_counter()
    backend = get_backend(f"local:{plan.base}")
    if not isinstance(backend, LocalChatBackend):
        raise TypeError("train-simulator needs a local model")
    template = load_prompt("simulate")
    window_sets = corpus_window_sets(backend.subject, plan.corpus, plan.window_sizes, plan.windows_per_size)
    members = synthetic_features(window_sets[0], plan.words)
    train_members, heldout_members = split_members(members, plan.max_members, plan.train.seed)
    settings = dict(
        active_per_member=plan.active_per_member,
        quiet_per_member=plan.quiet_per_member,
        cross_per_member=plan.cross_per_member,
        seed=plan.train.seed,
    )
    train_examples: list[SimExample] = (
        [] if plan.distill_only else build_examples(train_members, window_sets, **settings)
    )
    for db, run_id in plan.distill:
        distilled = distill_examples(db, run_id, plan.teacher)
        echo(f"distilling {len(distilled)} windows from run {run_id} in {db}")
        train_examples += distilled
    heldout_examples = build_examples(heldout_members, window_sets, **settings)[: plan.heldout_examples]
    families = sorted({m.family for m in members})
    echo(
        f"{len(train_members)} training and {len(heldout_members)} held-out family members "
        f"({', '.join(families)}); {len(train_examples)} training and {len(heldout_examples)} held-out examples"
    )
    layers = int(backend.subject.model.config.num_hidden_layers)
    config = AdapterConfig(
        base_model=plan.base,
        rank=plan.rank,
        alpha=plan.alpha,
        blocks=list(range(max(0, layers - plan.blocks), layers)),
        prompt="simulate",
    )
    trainer = SimulatorTrainer(backend, template, config, seed=plan.train.seed)
    encoded = [trainer.encode(e) for e in train_examples]
    heldout_encoded = [trainer.encode(e) for e in heldout_examples]
    last = [0.0]

    def progress(step: int, steps: int, loss: float) -> None:
        if step == steps or time.perf_counter() - last[0] > 30:
            last[0] = time.perf_counter()
            echo(f"step {step}/{steps}  loss {loss:.3f}  ({time.perf_counter() - started:.0f} s)")

    report = trainer.train(encoded, heldout_encoded, plan.train, progress)
    training: dict[str, Any] = {
        "command": "autointerp train-simulator " + shlex.join(sys.argv[2:]) if len(sys.argv) > 1 else "",
        "prompt_hash": template.hash,
        "corpus": plan.corpus,
        "window_sizes": list(plan.window_sizes),
        "families": families,
        "train_members": len(train_members),
        "heldout_members": sorted(m.name for m in heldout_members),
        "train_examples": len(train_examples),
        "distilled_from": [f"{db}#{run}" for db, run in plan.distill],
        "benchmark_features_trained_on": 0,
        "settings": asdict(plan.train),
        "report": asdict(report),
    }
    config.training = training
    save_adapter(plan.out, config, trainer.adapted)
    echo(
        f"trained {report.steps} steps on {report.examples_seen} examples in {report.seconds:.0f} s; held-out loss "
        f"{_fmt(report.heldout_loss_before)} -> {_fmt(report.heldout_loss_after)}"
    )
    if plan.evaluate:
        training["evaluation"] = _evaluate(plan, heldout_members, echo)
        write_adapter_config(plan.out, config)
    echo(f'wrote {plan.out}. Use it with score.simulator.model = "local:{plan.out}"')
    echo(f'  (or "local:{plan.base}{ADAPTER_SEPARATOR}{plan.out}")')
    return training


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _evaluate(plan: SimulatorTrainingPlan, heldout: list[SyntheticFeature], echo: Echo) -> dict[str, Any]:
    """Returns the untrained and trained simulators' numbers on held-out members and the benchmark."""
    bench = BenchSettings(corpus=plan.corpus, subject=plan.base)
    sets = {"held-out families": [m.as_planted() for m in heldout], "planted benchmark": BUILTIN_PLANTED_FEATURES}
    specs = {"untrained": f"local:{plan.base}", "trained": f"local:{plan.base}{ADAPTER_SEPARATOR}{plan.out}"}
    numbers: dict[str, Any] = {}
    for set_name, features in sets.items():
        for label, spec in specs.items():
            result: SimulatorEvaluation = evaluate_simulator(spec, features, bench)
            numbers.setdefault(set_name, {})[label] = result.summary()
            echo(
                f"{set_name:18} {label:9}  AUROC truth vs distractors {_fmt(result.auroc)}  "
                f"truth {_fmt(result.truth_mean)}  distractors {_fmt(result.distractor_mean)}  "
                f"({result.features} features)"
            )
    return numbers
