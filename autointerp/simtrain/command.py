"""`autointerp train-simulator`: synthetic families (and optionally a run to distil) -> a LoRA simulator."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autointerp.bench import BenchSettings
from autointerp.llm.adapter_spec import ADAPTER_SEPARATOR, SimulationLines
from autointerp.prompts import load_prompt
from autointerp.simtrain.distill import distill_examples
from autointerp.simtrain.driver import (
    Echo,
    format_loss,
    load_family_data,
    new_adapter_config,
    train_and_save,
)
from autointerp.simtrain.evaluate import SimulatorEvaluation, evaluate_simulator
from autointerp.simtrain.examples import SimExample, build_examples
from autointerp.simtrain.families import SyntheticFeature
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
    lines: SimulationLines = "token"
    """How the prompt writes each token's line (`previous-and-token` also shows the token before it)."""
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


def train_simulator(plan: SimulatorTrainingPlan, echo: Echo = print) -> dict[str, Any]:
    """Trains, saves and (unless `plan.evaluate` is off) measures a simulator adapter; returns what was
    written into its adapter.json `training` section."""
    started = time.perf_counter()
    data = load_family_data("train-simulator", plan)
    template = load_prompt("simulate")
    settings = dict(
        active_per_member=plan.active_per_member,
        quiet_per_member=plan.quiet_per_member,
        cross_per_member=plan.cross_per_member,
        seed=plan.train.seed,
    )
    train_examples: list[SimExample] = (
        [] if plan.distill_only else build_examples(data.train_members, data.window_sets, **settings)
    )
    for db, run_id in plan.distill:
        distilled = distill_examples(db, run_id, plan.teacher)
        echo(f"distilling {len(distilled)} windows from run {run_id} in {db}")
        train_examples += distilled
    heldout_examples = build_examples(data.heldout_members, data.window_sets, **settings)[: plan.heldout_examples]
    config = new_adapter_config(data, plan, prompt="simulate", lines=plan.lines)
    return train_and_save(
        "train-simulator",
        plan,
        data,
        SimulatorTrainer(data.backend, template, config, seed=plan.train.seed),
        (train_examples, heldout_examples),
        template.hash,
        started=started,
        setting="score.simulator.model",
        measure=lambda: _evaluate(plan, data.heldout_members, echo),
        echo=echo,
    )


def _evaluate(plan: SimulatorTrainingPlan, heldout: list[SyntheticFeature], echo: Echo) -> dict[str, Any]:
    """Returns the untrained and trained simulators' numbers on held-out members and the benchmark."""
    bench = BenchSettings(corpus=plan.corpus, subject=plan.base)
    sets = {"held-out families": [m.as_planted() for m in heldout], "planted benchmark": BUILTIN_PLANTED_FEATURES}
    specs = {"untrained": f"local:{plan.base}", "trained": f"local:{plan.base}{ADAPTER_SEPARATOR}{plan.out}"}
    numbers: dict[str, Any] = {}
    for set_name, features in sets.items():
        for label, spec in specs.items():
            result: SimulatorEvaluation = evaluate_simulator(spec, features, bench)
            # the scoring they were measured with: a benchmark reuses them only for the same prior
            numbers.setdefault(set_name, {})[label] = {**result.summary(), "simulation_prior": bench.simulation_prior}
            echo(
                f"{set_name:18} {label:9}  AUROC truth vs distractors {format_loss(result.auroc)}  "
                f"truth {format_loss(result.truth_mean)}  distractors {format_loss(result.distractor_mean)}  "
                f"({result.features} features)"
            )
    return numbers
