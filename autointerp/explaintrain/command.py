"""`autointerp train-explainer`: synthetic families (and optionally a stronger explainer's stored
explanations) -> a LoRA explainer on the local model, measured on held-out members and the planted benchmark."""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from autointerp.bench import BenchSettings, pair_auroc, run_bench
from autointerp.config import DEFAULT_SIMULATOR
from autointerp.explain.explainer import explain_template
from autointerp.explaintrain.distill import distill_explanations
from autointerp.explaintrain.examples import ExplainExample, build_explain_examples
from autointerp.explaintrain.train import ExplainerTrainer
from autointerp.llm import get_backend
from autointerp.llm.adapter import save_adapter, write_adapter_config
from autointerp.llm.adapter_spec import ADAPTER_SEPARATOR, AdapterConfig
from autointerp.llm.local import LocalChatBackend
from autointerp.simtrain.data import corpus_window_sets, split_members
from autointerp.simtrain.families import SyntheticFeature, synthetic_features
from autointerp.simtrain.lora import TrainSettings
from autointerp.subject.planted import BUILTIN_PLANTED_FEATURES, PlantedFeature

Echo = Callable[[str], None]


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
            f"(dropped {found.dropped_chance} not beating their distractor at p < 0.05, {found.dropped_other} other)"
        )
        examples += found.examples
    return examples


def train_explainer(plan: ExplainerTrainingPlan, echo: Echo = print) -> dict[str, Any]:
    """Trains, saves and (unless `plan.evaluate` is off) measures an explainer adapter; returns what was
    written into its adapter.json `training` section."""
    started = time.perf_counter()
    backend = get_backend(f"local:{plan.base}")
    if not isinstance(backend, LocalChatBackend):
        raise TypeError("train-explainer needs a local model")
    template = explain_template(None)
    window_sets = corpus_window_sets(backend.subject, plan.corpus, plan.window_sizes, plan.windows_per_size)
    members = synthetic_features(window_sets[0], plan.words)
    train_members, heldout_members = split_members(members, plan.max_members, plan.train.seed)

    def sample(chosen: list[SyntheticFeature]) -> list[ExplainExample]:
        return build_explain_examples(
            chosen,
            window_sets,
            per_member=plan.per_member,
            per_word_member=plan.per_word_member,
            shown=plan.shown,
            seed=plan.train.seed,
        )

    train_examples = [] if plan.distill_only else sample(train_members)
    train_examples += _distilled(plan, echo)
    heldout_examples = sample(heldout_members)[: plan.heldout_examples]
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
        prompt="explain",
    )
    trainer = ExplainerTrainer(backend, config, seed=plan.train.seed)
    encoded = [trainer.encode(e) for e in train_examples]
    heldout_encoded = [trainer.encode(e) for e in heldout_examples]
    last = [0.0]

    def progress(step: int, steps: int, loss: float) -> None:
        if step == steps or time.perf_counter() - last[0] > 30:
            last[0] = time.perf_counter()
            echo(f"step {step}/{steps}  loss {loss:.3f}  ({time.perf_counter() - started:.0f} s)")

    report = trainer.train(encoded, heldout_encoded, plan.train, progress)
    training: dict[str, Any] = {
        "command": "autointerp train-explainer " + shlex.join(sys.argv[2:]) if len(sys.argv) > 1 else "",
        "prompt_hash": template.hash,
        "evidence": "input",
        "corpus": plan.corpus,
        "window_sizes": list(plan.window_sizes),
        "shown_windows": list(plan.shown),
        "families": families,
        "train_members": len(train_members),
        "heldout_members": sorted(m.name for m in heldout_members),
        "train_examples": len(train_examples),
        "distilled_from": [f"{db}#{run}" for db, run in plan.distill],
        "teacher": plan.teacher,
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
        training["evaluation"] = evaluate_explainers(plan, [m.as_planted() for m in heldout_members], echo)
        write_adapter_config(plan.out, config)
    echo(f'wrote {plan.out}. Use it with explainer.model = "local:{plan.out}"')
    echo(f'  (or "local:{plan.base}{ADAPTER_SEPARATOR}{plan.out}")')
    return training


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


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
                f"simulation AUROC vs distractors {_fmt(auroc)}  ({written} explanations)"
            )
    return numbers
