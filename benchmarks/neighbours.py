"""Cosine neighbours at scale: blocked top-k over write directions, never the full square matrix.

Three cases, each in a fresh process so its peak memory is its own:

1. `neurons-layer`: all 46,080 MLP neurons of SmolLM2-135M (30 layers x 1536; the real down-projection
   columns, loaded with autointerp's own loader), each neuron's k nearest among its own layer's 1536
   (`neighbours.cosine_scope = "hook"`, the default);
2. `neurons-global`: the same 46,080, each one's k nearest among all 46,080 (`cosine_scope = "source"`);
3. `dictionary`: a random 131,072-latent dictionary (decoder rows, d_model 576), each latent's k nearest
   among all 131,072;
4. `cooccurrence`: co-occurrence neighbours of `--cooc-features` features firing at random in
   `--cooc-density` of `--cooc-windows` windows (`cooccurrence_neighbours`: the exact counts and top-k), and
   the streaming log's cost per batch of 16 windows x 32 tokens x 46,080 features (`CooccurrenceLog.add`)
   beside the sampler's own `update` of that batch (the forward pass not included).

Reported per case: seconds of the top-k (`autointerp.neighbours.cosine.cosine_neighbours`, records
included), the process's peak RSS, the RSS before the search (the inputs), and what a dense similarity
matrix would have needed. Printed as a table and written to results/benchmarks/neighbours.md.

    nice -n 5 .venv/bin/python benchmarks/neighbours.py                  # CPU, every case
    .venv/bin/python benchmarks/neighbours.py --device cuda             # on a GPU
    .venv/bin/python benchmarks/neighbours.py --cases dictionary --queries 8192
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autointerp.neighbours.cosine import MAX_BLOCK_ELEMENTS, cosine_neighbours  # noqa: E402

CPU = torch.device("cpu")
CASES = ("neurons-layer", "neurons-global", "dictionary", "cooccurrence")

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
parser.add_argument("--k", type=int, default=10)
parser.add_argument("--device", default="cpu")
parser.add_argument("--latents", type=int, default=131_072)
parser.add_argument("--queries", type=int, default=None, help="search for only this many features (default: all)")
parser.add_argument("--block-elements", type=int, default=MAX_BLOCK_ELEMENTS)
parser.add_argument("--cooc-features", type=int, default=4608)
parser.add_argument("--cooc-windows", type=int, default=10_000)
parser.add_argument("--cooc-density", type=float, default=0.05)
parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks" / "neighbours.md")
parser.add_argument("--one", choices=CASES, help=argparse.SUPPRESS)  # internal: run one case, print JSON


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _inputs(case: str, args: argparse.Namespace) -> tuple[list[str], list[str], torch.Tensor]:
    """Returns (ids, hooks, vectors [n, d]) of the case's universe."""
    if case == "dictionary":
        generator = torch.Generator().manual_seed(0)
        vectors = torch.randn(args.latents, 576, generator=generator)
        return [f"sae/{i}" for i in range(args.latents)], ["blocks.15.hook_resid_post"] * args.latents, vectors
    from autointerp.subject import load_subject_model
    from autointerp.subject.sources import MlpNeuronSource

    subject = load_subject_model("smollm2-135m", "cpu", "float32")
    layers = list(range(subject.n_layers))
    source = MlpNeuronSource(subject, layers, list(range(subject.d_mlp)))
    directions = source.write_directions()
    assert directions is not None
    return source.feature_ids, list(directions.hooks), directions.vectors.clone()


def _log_cost(k: int, firing: float, batches: int = 12) -> tuple[float, float]:
    """Returns (ms per batch of the co-occurrence log's `add`, ms per batch of the sampler's whole `update`
    without it): 16 windows x 32 tokens x 46,080 features, a `firing` share of (window, feature) pairs
    with a token at >= 10 % of the max, the rest below it."""
    from autointerp.collect.results import SamplingPlan
    from autointerp.collect.sampler import ExemplarSampler
    from autointerp.corpus.sources import Window
    from autointerp.neighbours.cooccurrence import CooccurrenceLog

    n, generator = 46_080, torch.Generator().manual_seed(1)
    sampler = ExemplarSampler(n, 32, SamplingPlan(top_k=10, random_windows=6, quantiles=5, per_quantile=2), CPU)
    log = CooccurrenceLog(n, k)
    log_s = update_s = 0.0
    for step in range(batches + 1):
        acts = torch.rand(16, 32, n, generator=generator) * 0.05  # below 10 % of the max
        fires = torch.rand(16, n, generator=generator) < firing
        acts[:, 0] = torch.where(fires, 0.1 + 0.9 * torch.rand(16, n, generator=generator), acts[:, 0])
        acts[0, 1] = 1.0  # the max
        windows = [Window(doc_id=16 * step + i, offset=0, token_ids=[0] * 32) for i in range(16)]
        start = time.perf_counter()
        sampler.update(acts, windows)
        middle = time.perf_counter()
        window_max = acts.amax(dim=1).T.contiguous()  # (features, batch), as the sampler hands it over
        begin = time.perf_counter()
        log.add(window_max, sampler.act_max, 16 * step)
        end = time.perf_counter()
        if step:  # the first batch compiles the CPU merge
            update_s += middle - start
            log_s += end - begin
    return log_s / batches * 1000, update_s / batches * 1000


def run_cooccurrence(args: argparse.Namespace) -> dict[str, Any]:
    """Returns the co-occurrence case's measurements (run in this process)."""
    from autointerp.neighbours.cooccurrence import FiringWindows, cooccurrence_neighbours

    generator = torch.Generator().manual_seed(0)
    n, windows = args.cooc_features, args.cooc_windows
    firing = torch.rand(windows, n, generator=generator) < args.cooc_density
    window, feature = firing.nonzero(as_tuple=True)
    del firing
    ids = [f"f/{i}" for i in range(n)]
    before = _rss_mib()
    start = time.perf_counter()
    found = cooccurrence_neighbours(FiringWindows(window, feature, n), ids, args.k)
    seconds = time.perf_counter() - start
    sparse_ms, update_ms = _log_cost(args.k, 0.05)
    dense_ms, _ = _log_cost(args.k, 1.0)
    return {
        "case": "cooccurrence",
        "features": n,
        "queries": n,
        "searched_among": n,
        "windows": windows,
        "entries": int(window.numel()),
        "rows": len(found),
        "seconds": seconds,
        "log_add_ms_per_batch_5pct": sparse_ms,
        "log_add_ms_per_batch_all_fire": dense_ms,
        "sampler_update_ms_per_batch": update_ms,
        "rss_before_mib": before,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "dense_matrix_gib": n * n * 4 / 2**30,
        "device": "cpu",
        "threads": torch.get_num_threads(),
    }


def run_one(case: str, args: argparse.Namespace) -> dict[str, Any]:
    """Returns the measurements of one case (run in this process)."""
    torch.set_grad_enabled(False)
    if case == "cooccurrence":
        return run_cooccurrence(args)
    ids, hooks, vectors = _inputs(case, args)
    vectors = vectors.to(args.device)
    import gc

    gc.collect()
    queries = ids[: args.queries] if args.queries else ids
    before = _rss_mib()
    start = time.perf_counter()
    found = cosine_neighbours(
        queries, ids, hooks, vectors, args.k, "hook" if case == "neurons-layer" else "source", args.block_elements
    )
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    universe = len(set(hooks)) if case == "neurons-layer" else 1
    per_group = len(ids) // universe
    return {
        "case": case,
        "features": len(ids),
        "queries": len(queries),
        "searched_among": per_group,
        "d": vectors.shape[1],
        "rows": len(found),
        "seconds": seconds,
        "rss_before_mib": before,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "dense_matrix_gib": universe * per_group * per_group * 4 / 2**30,
        "device": args.device,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args)))
        return
    rows = []
    for case in args.cases:
        command = [sys.executable, __file__, "--one", case, "--k", str(args.k), "--device", args.device]
        command += ["--latents", str(args.latents), "--block-elements", str(args.block_elements)]
        if args.queries:
            command += ["--queries", str(args.queries)]
        command += ["--cooc-features", str(args.cooc_features), "--cooc-windows", str(args.cooc_windows)]
        command += ["--cooc-density", str(args.cooc_density)]
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(json.dumps(row), flush=True)
    lines = [
        "| case | features | searched among | queries | k | seconds | peak RSS (MiB) | RSS before (MiB) "
        "| dense matrix (GiB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['features']:,} | {r['searched_among']:,} | {r['queries']:,} | {args.k} | "
            f"{r['seconds']:.1f} | {r['peak_rss_mib']:,.0f} | {r['rss_before_mib']:,.0f} | "
            f"{r['dense_matrix_gib']:.1f} |"
        )
    table = "\n".join(lines)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
