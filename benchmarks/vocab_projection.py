"""Output evidence at scale: the direct path of every MLP neuron of SmolLM2-135M, and steering's cost.

1. Direct path (vocabulary projection): the write directions of all 46,080 MLP neurons (30 layers x 1536
   down-projection columns, read with autointerp's own loader) through the final norm's gain and the
   unembedding (49,152 tokens), top-k promoted and suppressed tokens per neuron, blocked over neurons
   (`outputs.direct_block`); what `autointerp.outputs.direct.direct_path` does in the outputs stage.
2. Steering (`autointerp.outputs.steering.steering_topk`): neurons of one layer steered at 4 x their max
   activation on P neutral prompts of 16 tokens (the stage's defaults), batched over prompts and features;
   seconds per feature for each P, beside one clean forward pass of the same rows.

Writes results/benchmarks/outputs.md (the command, the machine's load, the tables).

    nice -n 5 .venv/bin/python benchmarks/vocab_projection.py
    .venv/bin/python benchmarks/vocab_projection.py --device cuda     # on a GPU
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autointerp.config import CorpusConfig  # noqa: E402
from autointerp.outputs.direct import DEFAULT_BLOCK, direct_path  # noqa: E402
from autointerp.outputs.steering import neutral_prompts, steering_topk  # noqa: E402
from autointerp.subject.model import load_subject_model  # noqa: E402
from autointerp.subject.sources import MlpNeuronSource  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--device", default="cpu")
parser.add_argument("--layers", type=int, default=None, help="first N layers only (default: all)")
parser.add_argument("--top-k", type=int, default=10)
parser.add_argument("--block", type=int, default=DEFAULT_BLOCK)
parser.add_argument("--repeats", type=int, default=1)
parser.add_argument("--steer-layer", type=int, default=20)
parser.add_argument("--steer-features", type=int, default=16)
parser.add_argument("--steer-prompts", type=int, nargs="+", default=[1, 4, 8])
parser.add_argument("--steer-tokens", type=int, default=16)
parser.add_argument("--steer-scale", type=float, default=4.0)
parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks" / "outputs.md")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_direct_path(args: argparse.Namespace) -> dict[str, float]:
    """Returns the seconds (each repeat) and memory of the direct path of every neuron of the chosen layers."""
    subject = load_subject_model("smollm2-135m", args.device, "float32")
    layers = list(range(args.layers or subject.n_layers))
    started = time.perf_counter()
    writes = MlpNeuronSource(subject, layers, list(range(subject.d_mlp))).write_directions()
    assert writes is not None
    gather = time.perf_counter() - started
    rss_before = _peak_rss_mib()
    seconds, cpu_seconds = [], []
    for _ in range(args.repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        result = direct_path(subject, writes.vectors, args.top_k, args.block)
        if subject.device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
        cpu_seconds.append(time.process_time() - cpu_started)
    assert result.promoted_ids.shape == (writes.vectors.shape[0], args.top_k)
    return {
        "features": float(writes.vectors.shape[0]),
        "gather_s": gather,
        "min_s": min(seconds),
        "median_s": statistics.median(seconds),
        "cpu_s": min(cpu_seconds),
        "rss_before_mib": rss_before,
        "rss_peak_mib": _peak_rss_mib(),
        "block_mib": args.block * subject.tokenizer.vocab_size * 4 / 2**20,
    }


def measure_steering(args: argparse.Namespace) -> list[dict[str, float]]:
    """Returns, per prompt count, steering's seconds per feature and a clean pass's seconds per row."""
    subject = load_subject_model("smollm2-135m", args.device, "float32")
    source = MlpNeuronSource(subject, [args.steer_layer], list(range(args.steer_features)))
    writes = source.write_directions()
    assert writes is not None
    rows = []
    for count in args.steer_prompts:
        prompts = neutral_prompts(subject, CorpusConfig(), count, args.steer_tokens)
        amounts = args.steer_scale * source.activations(prompts).amax(dim=(0, 1)).cpu()
        cpu_started = time.process_time()
        change = steering_topk(subject, prompts, writes.hooks, writes.vectors, amounts, args.top_k)
        cpu = time.process_time() - cpu_started
        started, cpu_started = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            subject.model(input_ids=prompts.to(subject.device), use_cache=False)
        clean, clean_cpu = time.perf_counter() - started, time.process_time() - cpu_started
        rows.append(
            {
                "prompts": float(count),
                "rows": float(change.rows),
                "seconds": change.seconds,
                "per_feature_s": change.seconds / args.steer_features,
                "cpu_per_feature_s": cpu / args.steer_features,
                "clean_per_row_s": clean / count,
                "clean_cpu_per_row_s": clean_cpu / count,
            }
        )
    return rows


def report(args: argparse.Namespace, direct: dict[str, float], steering: list[dict[str, float]]) -> str:
    """Returns the Markdown report."""
    command = "nice -n 5 .venv/bin/python benchmarks/vocab_projection.py " + " ".join(sys.argv[1:])
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        "# Output evidence: direct-path projection and steering cost",
        "",
        f"Command: `{command.strip()}`",
        "",
        f"Machine: {os.cpu_count()} CPU cores, device `{args.device}`, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; load average at the end {load} (the cores are shared with other "
        "jobs, so wall seconds here are upper bounds; CPU seconds are the process's own time, both threads "
        "summed). No GPU was available for this measurement.",
        "",
        "## Direct path of every MLP neuron",
        "",
        "| neurons | top-k | block | gather columns (s) | projection wall min (s) | median (s) | CPU (s) "
        "| block logits (MiB) | peak RSS before -> after (MiB) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {direct['features']:,.0f} | {args.top_k} | {args.block} | {direct['gather_s']:.2f} | "
        f"{direct['min_s']:.2f} | {direct['median_s']:.2f} | {direct['cpu_s']:.2f} | {direct['block_mib']:.0f} | "
        f"{direct['rss_before_mib']:.0f} -> {direct['rss_peak_mib']:.0f} |",
        "",
        f"One matrix product per block of {args.block} neurons ([block, 576] x [576, 49,152]), top-k on each "
        "block; memory stays at one block of logits however many neurons there are.",
        "",
        "## Steering cost per feature",
        "",
        f"{args.steer_features} neurons of layer {args.steer_layer}, steered at {args.steer_scale:g} x their max "
        f"activation on P neutral prompts of {args.steer_tokens} tokens (the first window of each of the "
        "first documents of the built-in corpus); one (feature, prompt) row per steered pass, 32 rows per "
        "forward pass, plus the P clean rows.",
        "",
        "| prompts P | rows run | wall seconds | wall s per feature | CPU s per feature "
        "| clean forward: wall s per row | CPU s per row |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in steering:
        lines.append(
            f"| {row['prompts']:.0f} | {row['rows']:.0f} | {row['seconds']:.2f} | {row['per_feature_s']:.3f} | "
            f"{row['cpu_per_feature_s']:.3f} | {row['clean_per_row_s']:.3f} | {row['clean_cpu_per_row_s']:.3f} |"
        )
    lines += [
        "",
        "Steering costs P forward rows per feature (about P x the clean cost of one row): "
        "`outputs.steer_prompts` sets P (default 4; 0 keeps the direct path only).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    """Runs both measurements and writes the report."""
    args = parser.parse_args()
    direct = measure_direct_path(args)
    print(f"direct path: {direct}", flush=True)
    steering = measure_steering(args)
    print(f"steering: {steering}", flush=True)
    text = report(args, direct, steering)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
