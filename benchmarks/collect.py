"""Collection speed and memory: every MLP neuron of SmolLM2-135M (30 x 1536 = 46,080) at once.

Three measurements, printed as a table and written to results/benchmarks/collect.md:

1. Throughput. The same batches go through (a) the bare model body (`model.model`, no hooks,
   no LM head) and (b) collection: hooks read the input of all 30 down projections, and the
   sampler keeps top-k, quantile and random windows for all 46,080 neurons. Bare and collect
   alternate batch by batch, so both see the same machine load; the ratio is collect / bare.
2. Peak RSS of a fresh process that collects N windows, and one that collects 10 N: flat when
   memory is bounded by what sampling keeps rather than by the corpus.
3. DuckDB: the stage's write of one layer's features and exemplars (rows built, then written through Arrow),
   rows/s.

    .venv/bin/python benchmarks/collect.py                 # CPU, sized for a 2-core machine
    .venv/bin/python benchmarks/collect.py --device cuda --dtype bfloat16 --windows 4096 --batch 256
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autointerp.collect import stage as collect_stage  # noqa: E402
from autointerp.collect.quiet_pass import refill_quiet_windows  # noqa: E402
from autointerp.collect.results import CollectionResult, SamplingPlan  # noqa: E402
from autointerp.collect.sampler import ExemplarSampler  # noqa: E402
from autointerp.collect.stage import run_collect  # noqa: E402
from autointerp.config import load_config  # noqa: E402
from autointerp.corpus.sources import iter_windows  # noqa: E402
from autointerp.store.database import Store  # noqa: E402
from autointerp.subject import load_subject_model  # noqa: E402
from autointerp.subject.kinds import AUTO_SKIPPED_TOKENS  # noqa: E402
from autointerp.subject.sources import MlpNeuronSource, skip_first_tokens  # noqa: E402

PLAN = SamplingPlan(top_k=10, random_windows=6, quantiles=5, per_quantile=2)

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--device", default="cpu")
parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
parser.add_argument("--windows", type=int, default=512, help="windows timed for the throughput ratio")
parser.add_argument("--window-tokens", type=int, default=32)
parser.add_argument("--batch", type=int, default=16, help="windows per forward pass")
parser.add_argument("--rss-windows", type=int, default=16, help="N for the peak-RSS runs (N and 10 N)")
parser.add_argument("--layers", type=int, default=0, help="track the neurons of the first L layers (0: every layer)")
parser.add_argument("--rss-only", type=int, default=0, help=argparse.SUPPRESS)  # child process mode
parser.add_argument("--skip-first-tokens", type=int, default=AUTO_SKIPPED_TOKENS, help="tokens not read per window")
parser.add_argument("--out", type=Path, default=ROOT / "results/benchmarks/collect.md")
args = parser.parse_args()

subject = load_subject_model("smollm2-135m", args.device, args.dtype)
every_neuron = list(range(subject.d_mlp))
# each window's first tokens are not read, as in a run (features.skip_first_tokens = "auto")
neurons = MlpNeuronSource(subject, list(range(args.layers or subject.n_layers)), every_neuron)
source = skip_first_tokens(neurons, args.skip_first_tokens)


def windows(n: int) -> list:
    return list(iter_windows(subject.tokenizer, "builtin:python-docs", window_tokens=args.window_tokens, max_windows=n))


def sync() -> None:
    if subject.device.type == "cuda":
        torch.cuda.synchronize()


def collect_batches(corpus: list, sampler: ExemplarSampler) -> None:
    for start in range(0, len(corpus), args.batch):
        batch = corpus[start : start + args.batch]
        ids = torch.tensor([w.token_ids for w in batch], device=subject.device)
        with torch.inference_mode():
            sampler.update(source.activation_chunks(ids), batch)


# -- child mode: collect N windows in a fresh process and report its peak RSS ---------------------
if args.rss_only:
    sampler = ExemplarSampler(source.n_features, args.window_tokens, PLAN, subject.device, source.skipped_tokens)
    collect_batches(windows(args.rss_only), sampler)
    # VmHWM is this process's own peak; ru_maxrss keeps the parent's peak across fork and exec
    with open("/proc/self/status", encoding="ascii") as status:
        print(next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) // 1024)  # MiB
    sys.exit(0)

# -- 1. throughput: bare body vs collection, batch by batch -------------------------------------------
corpus = windows(args.windows)
tokens = len(corpus) * args.window_tokens
sampler = ExemplarSampler(source.n_features, args.window_tokens, PLAN, subject.device, source.skipped_tokens)
warm = torch.tensor([w.token_ids for w in corpus[: args.batch]], device=subject.device)
t0 = time.perf_counter()
with torch.inference_mode():  # warm-up; the first update loads (or compiles) the CPU merge
    subject.model.model(input_ids=warm)  # type: ignore[operator]
    ExemplarSampler(source.n_features, args.window_tokens, PLAN, subject.device, source.skipped_tokens).update(
        source.activation_chunks(warm), corpus[: args.batch]
    )
warm_s = time.perf_counter() - t0
bare_s = collect_s = 0.0
halves = {"first": [0.0, 0.0], "second": [0.0, 0.0]}  # [bare s, collect s] per half of the corpus
for start in range(0, len(corpus), args.batch):
    batch = corpus[start : start + args.batch]
    ids = torch.tensor([w.token_ids for w in batch], device=subject.device)
    with torch.inference_mode():
        sync()
        t0 = time.perf_counter()
        subject.model.model(input_ids=ids)  # type: ignore[operator]
        sync()
        t1 = time.perf_counter()
        sampler.update(source.activation_chunks(ids), batch)
        sync()
        t2 = time.perf_counter()
    bare_s += t1 - t0
    collect_s += t2 - t1
    half = halves["first" if start < len(corpus) // 2 else "second"]
    half[0] += t1 - t0
    half[1] += t2 - t1
bare_tps, collect_tps = tokens / bare_s, tokens / collect_s
t0 = time.perf_counter()
stats = sampler.stats()
exemplars = sampler.exemplars(stats)
exemplar_count = len(exemplars)
finish_s = time.perf_counter() - t0
# collect.quiet_pass: the corpus read again for the neurons the stream left short of non-activating windows
t0 = time.perf_counter()
result = CollectionResult(source.indices, stats, exemplars)
quiet_before = [quiet for _, quiet in result.window_counts()]
passed = refill_quiet_windows(result, corpus, source.activation_chunks, PLAN, args.batch, subject.device)
quiet_s = time.perf_counter() - t0
quiet_after = [quiet for _, quiet in result.window_counts()]
gained = sum(after > before for before, after in zip(quiet_before, quiet_after, strict=True))

# -- 2. peak RSS at N and 10 N windows, each in a fresh process ----------------------------------
rss = {}
for n in (args.rss_windows, 10 * args.rss_windows):
    command = [sys.executable, __file__, "--rss-only", str(n), "--device", args.device, "--dtype", args.dtype]
    command += ["--window-tokens", str(args.window_tokens), "--batch", str(args.batch), "--layers", str(args.layers)]
    command += ["--skip-first-tokens", str(args.skip_first_tokens)]
    rss[n] = int(subprocess.run(command, check=True, capture_output=True, text=True).stdout.split()[-1])

# -- 3. DuckDB bulk write: the collect stage's rows for one layer's 1,536 neurons -----------------------
with tempfile.TemporaryDirectory() as folder:
    config = load_config(
        None,
        [
            f"store.path='{folder}/bench.duckdb'",
            "features.count='all'",
            f"corpus.max_windows={args.rss_windows}",
            f"corpus.window_tokens={args.window_tokens}",
            f"subject.device='{args.device}'",
            f"subject.dtype='{args.dtype}'",
        ],
    )
    store = Store(config.store.path)
    store.migrate()
    timing = {"seconds": 0.0, "rows": 0.0}

    def timed(work: Any) -> Any:
        def run(*args: Any) -> Any:
            t0 = time.perf_counter()
            out = work(*args)
            timing["seconds"] += time.perf_counter() - t0
            return out

        return run

    # the exemplar rows built, then the features and exemplars written (not the neighbours computed between)
    collect_stage.exemplar_table = timed(collect_stage.exemplar_table)  # type: ignore[attr-defined]
    original_write = store.write_collection

    def write(run_id: str, features: Any, exemplars: Any) -> None:
        timing["rows"] = len(features) + len(exemplars)
        original_write(run_id, features, exemplars)

    store.write_collection = timed(write)  # type: ignore[method-assign]
    run_collect(config, store, config.resolved_run_id())
rows_per_s = timing["rows"] / timing["seconds"]

# -- report --------------------------------------------------------------------------------------
device = torch.cuda.get_device_name() if subject.device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
lines = [
    f"# Collection benchmark: all {source.n_features:,} MLP neurons of SmolLM2-135M",
    "",
    f"Device: {device}, {args.dtype}; {len(corpus)} windows x {args.window_tokens} tokens, batch {args.batch}; "
    f"kept per neuron: top {PLAN.top_k}, {PLAN.quantiles} quantiles x {PLAN.per_quantile}, "
    f"{PLAN.random_windows} random. Command: `{' '.join(['benchmarks/collect.py', *sys.argv[1:]])}`",
    "",
    "| measurement | value |",
    "| --- | --- |",
    f"| bare forward (model body, no hooks) | {bare_tps:,.0f} tokens/s |",
    f"| collection, all neurons tracked | {collect_tps:,.0f} tokens/s |",
    f"| ratio collect / bare (goal >= 0.95) | {collect_tps / bare_tps:.2f} |",
    f"| ratio, first half (most kept items still change) | {halves['first'][0] / halves['first'][1]:.2f} |",
    f"| ratio, second half | {halves['second'][0] / halves['second'][1]:.2f} |",
    f"| warm-up: one batch, including loading or compiling the CPU merge | {warm_s:.1f} s |",
    f"| turning the state into {exemplar_count:,} exemplars (once, at the end) | {finish_s:.1f} s |",
    f"| second pass for the {len(passed):,} neurons short of non-activating windows (`collect.quiet_pass`; "
    f"{gained:,} of them got more) | {quiet_s:.1f} s ({quiet_s / collect_s:.2f} x the stream's time) |",
    f"| peak RSS, {args.rss_windows} windows | {rss[args.rss_windows]:,} MiB |",
    f"| peak RSS, {10 * args.rss_windows} windows (10x) | {rss[10 * args.rss_windows]:,} MiB |",
    f"| stage's write (rows built, DuckDB through Arrow), {timing['rows']:,} rows of one layer "
    f"| {rows_per_s:,.0f} rows/s |",
    f"| load average (1, 5, 15 min) at the end, {os.cpu_count()} cores "
    f"| {', '.join(f'{x:.1f}' for x in os.getloadavg())} |",
]
print("\n".join(lines))
args.out.parent.mkdir(parents=True, exist_ok=True)
args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
