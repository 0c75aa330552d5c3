"""The `autointerp train-explainer` command (registered on the main app in autointerp/cli/app.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from autointerp.simtrain.cli import check_training_options, distill_source


def train_explainer_command(
    out: Annotated[Path, typer.Option(help="Folder to write the adapter into.")] = Path("explainer"),
    base: Annotated[str, typer.Option(help="Local model to fine-tune (a `local:` model name).")] = "smollm2-135m",
    corpus: Annotated[str, typer.Option(help="Corpus the synthetic features fire on.")] = "builtin:python-docs",
    windows: Annotated[int, typer.Option(help="Corpus windows per window length.", min=1)] = 1536,
    window_sizes: Annotated[
        list[int] | None, typer.Option("--window-size", help="Window length in tokens; repeat for mixed lengths.")
    ] = None,
    words: Annotated[int, typer.Option(help="Single-word family members (frequent corpus words).", min=0)] = 120,
    per_member: Annotated[int, typer.Option(help="Prompts per family member and window length.", min=1)] = 6,
    per_word_member: Annotated[
        int,
        typer.Option(help="Prompts per single-word member and window length (they are many and alike).", min=0),
    ] = 1,
    blocks: Annotated[int, typer.Option(help="Top blocks that get a LoRA adapter.", min=1)] = 8,
    rank: Annotated[int, typer.Option(help="LoRA rank.", min=1)] = 16,
    epochs: Annotated[int, typer.Option(help="Passes over the training examples.", min=1)] = 1,
    batch_size: Annotated[int, typer.Option(help="Examples per step.", min=1)] = 4,
    learning_rate: Annotated[float, typer.Option(help="AdamW learning rate.")] = 1e-3,
    warmup_steps: Annotated[int, typer.Option(help="Steps of linear warm-up.", min=0)] = 3,
    max_minutes: Annotated[
        float | None, typer.Option(help="Stop training after this many minutes (the learning rate decays with time).")
    ] = 28.0,
    distill: Annotated[
        list[str] | None,
        typer.Option(help="FILE.duckdb#RUN_ID whose explanations (those beating their distractor) to learn; repeat."),
    ] = None,
    teacher: Annotated[str | None, typer.Option(help="Distil only this explainer (backend:model).")] = None,
    distill_only: Annotated[bool, typer.Option(help="Train on distilled explanations alone.")] = False,
    evaluate: Annotated[bool, typer.Option(help="Measure untrained vs trained on held-out and planted features.")] = (
        True
    ),
    seed: Annotated[int, typer.Option(help="Seed for sampling and initialisation.")] = 0,
) -> None:
    """Fine-tune a local model as the explainer (LoRA) on synthetic feature families, optionally distilling
    a stronger explainer's explanations that beat their distractor (p < 0.05) with a score above 0."""
    from autointerp.explaintrain.command import ExplainerTrainingPlan, train_explainer
    from autointerp.simtrain.lora import TrainSettings

    plan = ExplainerTrainingPlan(
        out=out,
        base=base,
        corpus=corpus,
        windows_per_size=windows,
        window_sizes=tuple(window_sizes or ExplainerTrainingPlan.window_sizes),
        words=words,
        per_member=per_member,
        per_word_member=per_word_member,
        blocks=blocks,
        rank=rank,
        alpha=2.0 * rank,
        train=TrainSettings(
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            warmup_steps=warmup_steps,
            max_minutes=max_minutes,
            seed=seed,
        ),
        distill=[distill_source(d) for d in distill or []],
        distill_only=distill_only,
        teacher=teacher,
        evaluate=evaluate,
    )
    check_training_options(plan.window_sizes, plan.train, plan.distill, distill_only, out)
    train_explainer(plan, echo=lambda line: typer.echo(line))
