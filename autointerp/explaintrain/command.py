"""`autointerp train-explainer`: synthetic families (and optionally a stronger explainer's stored
explanations) -> a LoRA explainer on the local model, measured on held-out members and the planted benchmark."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autointerp.bench import BenchSettings, pair_auroc, run_bench
from autointerp.config import DEFAULT_SIMULATOR
from autointerp.explain.explainer import explain_template
from autointerp.explaintrain.distill import distill_explanations
from autointerp.explaintrain.examples import ExplainExample, build_explain_examples
from autointerp.explaintrain.train import ExplainerTrainer
from autointerp.llm.adapter_spec import ADAPTER_SEPARATOR
from autointerp.simtrain.driver import (
    Echo,
    format_loss,
    load_family_data,
    new_adapter_config,
    train_and_save,
)
from autointerp.simtrain.families import SyntheticFeature
from autointerp.simtrain.lora import TrainSettings
from autointerp.subject.planted import BUILTIN_PLANTED_FEATURES, PlantedFeature


@dataclass
class ExplainerTrainingPlan:
    """Everything `train-explainer` needs; the defaults train the shipped explainer (<= 30 min on 2 CPU cores)."""

    out: Path
    base: str = "smollm2-135m"
    corpus: str = "builtin:python-docs"
    window_sizes: tuple[int, ...] = (12, 32)
    """Window lengths shown (the benchmark uses 12 tokens, a run 32 by default)."""
    windows_per_size: int = 1536
    words: int = 120
    """Single-word members, chosen among the corpus's frequent words."""
    per_member: int = 6
    """Prompts per member and window length (each a different sample of its windows)."""
    per_word_member: int = 1
    """Prompts per single-word member and window length (they are many and alike)."""
    shown: tuple[int, int] = (4, 8)
    """Fewest and most windows shown per prompt (a run shows about 8: 4 top and 4 quantile windows)."""
    heldout_examples: int = 16
    """Held-out examples kept to measure the loss before and after."""
    blocks: int = 8
    """Adapted blocks, counted from the top of the model."""
    rank: int = 16
    alpha: float = 32.0
    train: TrainSettings = field(
        default_factory=lambda: TrainSettings(learning_rate=1e-3, batch_size=4, warmup_steps=3, max_minutes=28.0)
    )
    distill: list[tuple[Path, str]] = field(default_factory=list)
    """(DuckDB file, run id) pairs whose explanations (those that beat their distractor) are added."""
    distill_only: bool = False
    """Train on the distilled explanations alone (no synthetic families)."""
    teacher: str | None = None
    """Keep only this explainer's explanations when distilling (`backend:model`)."""
    evaluate: bool = True
    """Measure the untrained and trained explainers on held-out members and the planted benchmark."""
    scorer: str = DEFAULT_SIMULATOR
    """The simulator that scores explanations in the evaluation (the run's default)."""
    max_members: int | None = None
    """Use at most this many training members (tests)."""


def _distilled(plan: ExplainerTrainingPlan, echo: Echo) -> list[ExplainExample]:
    examples: list[ExplainExample] = []
    for db, run_id in plan.distill:
        found = distill_explanations(db, run_id, plan.teacher)
        echo(
            f"distilling {len(found.examples)} explanations from run {run_id} in {db} "
            f"(dropped {found.dropped_chance} not beating their distractor at p < 0.05 or not above 0, "
            f"{found.dropped_other} other)"
        )
        examples += found.examples
    return examples


def train_explainer(plan: ExplainerTrainingPlan, echo: Echo = print) -> dict[str, Any]:
    """Trains, saves and (unless `plan.evaluate` is off) measures an explainer adapter; returns what was
    written into its adapter.json `training` section."""
    started = time.perf_counter()
    data = load_family_data("train-explainer", plan)
    template = explain_template(None)

    def sample(chosen: list[SyntheticFeature]) -> list[ExplainExample]:
        return build_explain_examples(
            chosen,
            data.window_sets,
            per_member=plan.per_member,
            per_word_member=plan.per_word_member,
            shown=plan.shown,
            seed=plan.train.seed,
        )

    train_examples = [] if plan.distill_only else sample(data.train_members)
    train_examples += _distilled(plan, echo)
    heldout_examples = sample(data.heldout_members)[: plan.heldout_examples]
    config = new_adapter_config(data, plan, prompt="explain")
    return train_and_save(
        "train-explainer",
        plan,
        data,
        ExplainerTrainer(data.backend, config, seed=plan.train.seed),
        (train_examples, heldout_examples),
        template.hash,
        started=started,
        setting="explainer.model",
        measure=lambda: evaluate_explainers(plan, [m.as_planted() for m in data.heldout_members], echo),
        echo=echo,
        evidence="input",
        shown_windows=list(plan.shown),
        teacher=plan.teacher,
    )


def evaluate_explainers(plan: ExplainerTrainingPlan, heldout: list[PlantedFeature], echo: Echo) -> dict[str, Any]:
    """Returns, for the untrained and the trained explainer, on held-out members and on the planted
    benchmark: how often the truth is the nearest description to the explanation (embedding), and the
    explanations' simulation AUROC against distractor descriptions (scored by `plan.scorer`)."""
    specs = {"untrained": f"local:{plan.base}", "trained": f"local:{plan.base}{ADAPTER_SEPARATOR}{plan.out}"}
    bench = BenchSettings(
        corpus=plan.corpus,
        subject=plan.base,
        scorer=plan.scorer,
        methods=["simulation"],
        explainers=list(specs.values()),
        rounds=0,
        top_tokens=False,  # the adapter's own answers are measured, not the list a run may keep instead
    )
    numbers: dict[str, Any] = {}
    for set_name, features in {"held-out families": heldout, "planted benchmark": BUILTIN_PLANTED_FEATURES}.items():
        result = run_bench(list(features), bench)
        for label, spec in specs.items():
            near = result.similarity.get(spec, {})
            auroc, pairs = pair_auroc(result.scores["simulation"], f"explainer:{spec}")
            written = sum(1 for text in result.explanations[spec].values() if text)
            numbers.setdefault(set_name, {})[label] = {
                "features": len(result.explanations[spec]),
                "written": written,
                "truth_nearest": sum(v[1] for v in near.values()),
                "auroc_vs_distractors": None if auroc is None else round(auroc, 3),
                "pairs": pairs,
            }
            echo(
                f"{set_name:18} {label:9}  truth nearest {numbers[set_name][label]['truth_nearest']}/{len(near)}  "
                f"simulation AUROC vs distractors {format_loss(auroc)}  ({written} explanations)"
            )
    return numbers
