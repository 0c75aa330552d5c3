"""Simulators compared on features whose truth is known: untrained zero-shot, untrained few-shot, trained.

For each simulator and each feature set, the truth's simulation score is compared with two distractor
descriptions' scores on the same held-out windows (the planted benchmark's procedure,
`autointerp.simtrain.evaluate`): the AUROC truth vs distractors, and the mean scores. Two feature sets:
the synthetic family members held out of training (never trained on), and the 27 planted benchmark
features (none of which any family member equals). Written to results/benchmarks/simulator.md.

    .venv/bin/python benchmarks/simulator.py                       # the shipped adapter, ~25 min on 2 cores
    .venv/bin/python benchmarks/simulator.py --adapter /path/to/adapter --output /tmp/simulator.md
    # two adapters side by side, on 12- and 32-token windows, trained rows only
    .venv/bin/python benchmarks/simulator.py --adapter new/ --compare old/ --window-tokens 12 --window-tokens 32 \
        --trained-only
"""

from __future__ import annotations

import argparse
import itertools
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autointerp.bench import BenchSettings  # noqa: E402
from autointerp.corpus.sources import iter_windows  # noqa: E402
from autointerp.llm.adapter_spec import ADAPTER_SEPARATOR, packaged_adapter, read_adapter_config  # noqa: E402
from autointerp.score.registry import SimulationPrompt  # noqa: E402
from autointerp.simtrain.evaluate import SimulatorEvaluation, evaluate_simulator  # noqa: E402
from autointerp.simtrain.families import synthetic_features  # noqa: E402
from autointerp.subject import load_subject_model  # noqa: E402
from autointerp.subject.planted import BUILTIN_PLANTED_FEATURES, PlantedFeature  # noqa: E402


def heldout_members(base: str, corpus: str, windows: int, words: int) -> list[PlantedFeature]:
    """Returns the held-out family members as train-simulator chose them (same corpus windows and words)."""
    subject = load_subject_model(base, "cpu")
    cut = iter_windows(subject.tokenizer, corpus, window_tokens=12, max_windows=windows)
    decoded = [subject.decode_tokens(w.token_ids) for w in cut]
    return [m.as_planted() for m in synthetic_features(decoded, words) if m.held_out]


def _shown(adapter: Path) -> Path:
    return adapter.relative_to(ROOT) if adapter.is_relative_to(ROOT) else adapter


def _fmt(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, int | float) else "–"


def main() -> None:
    """Runs the comparison and writes the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", type=Path, default=packaged_adapter("smollm2-135m-sim"))
    parser.add_argument("--output", type=Path, default=ROOT / "results" / "benchmarks" / "simulator.md")
    parser.add_argument(
        "--measure-all",
        action="store_true",
        help="Measure the untrained and trained zero-shot rows again instead of reading them from adapter.json "
        "(where train-simulator stored them, measured the same way).",
    )
    parser.add_argument("--compare", type=Path, action="append", default=[], help="Another adapter; repeat.")
    parser.add_argument(
        "--window-tokens", type=int, action="append", default=[], help="Held-out window length; repeat (default 12)."
    )
    parser.add_argument(
        "--prior",
        choices=["subtract", "keep"],
        action="append",
        default=[],
        help="score.simulation_prior: predictions less the simulator's prior, or as read; repeat to compare "
        "(default: a run's).",
    )
    parser.add_argument("--planted-only", action="store_true", help="Only the planted benchmark's features.")
    parser.add_argument("--trained-only", action="store_true", help="Leave out the untrained model's rows.")
    parser.add_argument("--features", type=int, default=0, help="Features per set (0: all of them).")
    parser.add_argument("--max-windows", type=int, default=4096, help="Corpus windows the held-out windows come from.")
    args = parser.parse_args()
    config = read_adapter_config(args.adapter)
    training = config.training
    base, corpus = config.base_model, training.get("corpus", "builtin:python-docs")
    sets: dict[str, list[PlantedFeature]] = {}
    if not args.planted_only:  # cutting the corpus for the held-out members loads the model: only when needed
        sets["held-out families"] = heldout_members(base, corpus, 1536, 120)
    sets["planted benchmark"] = list(BUILTIN_PLANTED_FEATURES)
    if args.features:
        sets = {name: features[: args.features] for name, features in sets.items()}
    simulators: list[tuple[str, str, SimulationPrompt]] = []
    if not args.trained_only:
        simulators += [
            ("untrained, zero-shot", f"local:{base}", "zero-shot"),
            ("untrained, few-shot", f"local:{base}", "few-shot"),
        ]
    for adapter in [args.adapter, *args.compare]:
        label = "trained adapter, zero-shot" if adapter == args.adapter else f"`{_shown(adapter)}`, zero-shot"
        simulators.append((label, f"local:{base}{ADAPTER_SEPARATOR}{adapter}", "zero-shot"))
    lengths = args.window_tokens or [12]
    stored = training.get("evaluation", {})
    stored_labels = {"untrained, zero-shot": "untrained", "trained adapter, zero-shot": "trained"}
    results: dict[tuple[str, str], dict[str, float | int | str | None]] = {}
    seconds: dict[str, float] = {}
    priors = args.prior or [BenchSettings().simulation_prior]
    for tokens, prior in itertools.product(lengths, priors):
        settings = BenchSettings(corpus=corpus, subject=base, max_windows=args.max_windows, window_tokens=tokens)
        settings.simulation_prior = prior
        for set_name, features in sets.items():
            for label, spec, prompt in simulators:
                row_name = label if lengths == [12] else f"{label}, {tokens}-token windows"
                row_name += f", prior {prior}" if len(priors) > 1 else ""
                reused = stored.get(set_name, {}).get(stored_labels.get(label, ""))
                # adapter.json's rows, when measured the same way (rows from before the setting: as read)
                same_prior = reused and reused.get("simulation_prior", "keep") == prior
                if same_prior and tokens == 12 and not args.measure_all:
                    results[set_name, row_name] = {**reused, "source": "adapter.json"}
                    continue
                started = time.perf_counter()
                measured: SimulatorEvaluation = evaluate_simulator(spec, features, settings, prompt)
                results[set_name, row_name] = {**measured.summary(), "source": "this run"}
                seconds[f"{set_name} / {row_name}"] = time.perf_counter() - started
                print(f"{set_name} / {row_name}: {results[set_name, row_name]}", flush=True)
    lines = [
        "# Simulators on features whose truth is known",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {platform.machine()} CPU · base `{base}` · "
        f"adapter `{_shown(args.adapter)}` · `benchmarks/simulator.py {' '.join(sys.argv[1:])}`",
        "",
        "Per feature, the true description and 2 distractor descriptions (other features of the same set) are",
        f"simulated on the feature's held-out windows ({'/'.join(map(str, lengths))} tokens; 3 activating, 3 not). "
        "AUROC: share of",
        "(truth, distractor) pairs where the truth's correlation is higher. Held-out families: the synthetic",
        f"family members `train-simulator` never trained on ({len(sets.get('held-out families', []))}). "
        "Planted benchmark:",
        "the 27 features of `autointerp bench`, none of which is a training family member.",
        "",
        "Rows marked `adapter.json` were measured by `train-simulator` right after training, with the same",
        "function and settings (`--measure-all` measures them again).",
        f"Simulation prior (`score.simulation_prior`): {', '.join(priors)} (`subtract`: each prediction less the",
        'simulator\'s prediction under "nothing in particular"; `keep`: as read).',
        "",
        "| feature set | simulator | features | AUROC truth vs distractors | truth mean | distractor mean | measured |",
        "|---|---|---|---|---|---|---|",
    ]
    for (set_name, label), row in results.items():
        lines.append(
            f"| {set_name} | {label} | {row['features']} | {_fmt(row['auroc_truth_vs_distractors'])} | "
            f"{_fmt(row['truth_mean'])} | {_fmt(row['distractor_mean'])} | {row['source']} |"
        )
    report = training.get("report", {})
    lines += [
        "",
        "## How the adapter was trained",
        "",
        f"- Command: `{training.get('command') or 'autointerp train-simulator'}`",
        f"- LoRA rank {config.rank}, alpha {config.alpha}, blocks {config.blocks[0]}-{config.blocks[-1]}, "
        f"prompt `{config.prompt}` (hash {training.get('prompt_hash')})",
        f"- {training.get('train_members')} training family members ({', '.join(training.get('families', []))}), "
        f"{training.get('train_examples')} examples; benchmark features trained on: "
        f"{training.get('benchmark_features_trained_on')}",
        f"- {report.get('steps')} steps in {report.get('seconds')} s; held-out loss "
        f"{_fmt(report.get('heldout_loss_before'))} -> {_fmt(report.get('heldout_loss_after'))}",
        "",
        "Seconds per evaluation: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()),
        "",
    ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
