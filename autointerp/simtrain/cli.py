"""The `autointerp train-simulator` command (registered on the main app in autointerp/cli/app.py)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from autointerp.errors import ConfigError
from autointerp.llm.adapter_spec import SimulationLines
from autointerp.paths import check_output_path

if TYPE_CHECKING:
    from autointerp.simtrain.lora import TrainSettings


def distill_source(value: str) -> tuple[Path, str]:
    """Returns (DuckDB file, run id) from `FILE#RUN_ID`; raises ConfigError otherwise."""
    db, sep, run_id = value.rpartition("#")
    if not sep or not db or not run_id:
        raise ConfigError(f"--distill {value!r} must look like FILE.duckdb#RUN_ID")
    return Path(db).expanduser(), run_id


def check_training_options(
    window_sizes: tuple[int, ...],
    train: TrainSettings,
    distill: list[tuple[Path, str]],
    distill_only: bool,
    out: Path,
) -> None:
    """Raises ConfigError, naming the option, for values the training commands cannot use (their integer
    options carry their own bounds), and for an --out that cannot become the adapter's folder."""
    if any(size < 4 for size in window_sizes):
        raise ConfigError("--window-size must be at least 4 tokens")
    if not 0 < train.learning_rate < math.inf:
        raise ConfigError(f"--learning-rate must be a finite number above 0 (got {train.learning_rate:g})")
    if train.max_minutes is not None and not train.max_minutes > 0:
        raise ConfigError(f"--max-minutes must be above 0 (got {train.max_minutes:g}); leave it out for no limit")
    if distill_only and not distill:
        raise ConfigError("--distill-only needs at least one --distill FILE.duckdb#RUN_ID")
    check_output_path(out, "--out", folder=True)


def train_simulator_command(
    out: Annotated[Path, typer.Option(help="Folder to write the adapter into.")] = Path("simulator"),
    base: Annotated[str, typer.Option(help="Local model to fine-tune (a `local:` model name).")] = "smollm2-135m",
    corpus: Annotated[str, typer.Option(help="Corpus the synthetic features are evaluated on.")] = (
        "builtin:python-docs"
    ),
    windows: Annotated[int, typer.Option(help="Corpus windows per window length.", min=1)] = 1536,
    window_sizes: Annotated[
        list[int] | None, typer.Option("--window-size", help="Window length in tokens; repeat for mixed lengths.")
    ] = None,
    words: Annotated[int, typer.Option(help="Single-word family members (frequent corpus words).", min=0)] = 120,
    lines: Annotated[
        SimulationLines, typer.Option(help="Each token's line: the token, or the token before it, ' ->' and the token.")
    ] = "token",
    blocks: Annotated[int, typer.Option(help="Top blocks that get a LoRA adapter.", min=1)] = 8,
    rank: Annotated[int, typer.Option(help="LoRA rank.", min=1)] = 16,
    epochs: Annotated[int, typer.Option(help="Passes over the training examples.", min=1)] = 1,
    batch_size: Annotated[int, typer.Option(help="Examples per step.", min=1)] = 8,
    learning_rate: Annotated[float, typer.Option(help="AdamW learning rate.")] = 8e-4,
    max_minutes: Annotated[float | None, typer.Option(help="Stop training after this many minutes.")] = None,
    distill: Annotated[
        list[str] | None, typer.Option(help="FILE.duckdb#RUN_ID whose simulator predictions to learn; repeat.")
    ] = None,
    teacher: Annotated[str | None, typer.Option(help="Distil only this simulator (backend:model).")] = None,
    distill_only: Annotated[bool, typer.Option(help="Train on distilled predictions alone.")] = False,
    evaluate: Annotated[bool, typer.Option(help="Measure untrained vs trained on held-out families.")] = True,
    seed: Annotated[int, typer.Option(help="Seed for sampling and initialisation.")] = 0,
) -> None:
    """Fine-tune a local model as an all-at-once simulator (LoRA) on synthetic feature families."""
    from autointerp.simtrain.command import SimulatorTrainingPlan, train_simulator
    from autointerp.simtrain.train import TrainSettings

    plan = SimulatorTrainingPlan(
        out=out,
        base=base,
        corpus=corpus,
        windows_per_size=windows,
        window_sizes=tuple(window_sizes or SimulatorTrainingPlan.window_sizes),
        words=words,
        lines=lines,
        blocks=blocks,
        rank=rank,
        alpha=2.0 * rank,
        train=TrainSettings(
            epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, max_minutes=max_minutes, seed=seed
        ),
        distill=[distill_source(d) for d in distill or []],
        distill_only=distill_only,
        teacher=teacher,
        evaluate=evaluate,
    )
    check_training_options(plan.window_sizes, plan.train, plan.distill, distill_only, out)
    train_simulator(plan, echo=lambda line: typer.echo(line))
