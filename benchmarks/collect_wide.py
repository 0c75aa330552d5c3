"""Collection for wide dictionaries: a 131,072-latent TopK or JumpReLU SAE (random weights) on SmolLM2-135M's
residual stream, and all 46,080 MLP neurons, each in a fresh process.

For each source, one process measures:

1. Throughput. The same batches go through (a) the bare pass that produces the activations and nothing
   else: for a dictionary, the model body up to the hook point plus the encoder (`SaeLatentSource.activations`);
   for the neurons, the model body without hooks (as `benchmarks/collect.py`); and (b) collection: the
   activations plus the sampler's update for every latent. Bare and collect alternate batch by batch, so
   both see the same machine load; the ratio is bare time / collect time.
2. Memory against windows: the process's resident memory after every batch; flat when it is bounded by
   what sampling keeps (a fixed state per latent), not by the windows seen. Reported: after the first
   batch, the most over the first and the last quarter of the batches, and the peak (warm-up included).
3. Sampler state per latent: the bytes of every tensor the sampler keeps, divided by the latents.

The table replaces the section between the `collect-wide` markers of results/benchmarks/scale.md (the
rest of the file is left as it is):

    .venv/bin/python benchmarks/collect_wide.py                      # CPU: topk, jumprelu, neurons
    .venv/bin/python benchmarks/collect_wide.py --sources topk --windows 64
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autointerp.collect.results import SamplingPlan  # noqa: E402
from autointerp.collect.sampler import ExemplarSampler  # noqa: E402
from autointerp.corpus.sources import Window, iter_windows  # noqa: E402
from autointerp.subject import SubjectModel, load_subject_model  # noqa: E402
from autointerp.subject.kinds import AUTO_SKIPPED_TOKENS  # noqa: E402
from autointerp.subject.sae import SparseAutoencoder  # noqa: E402
from autointerp.subject.sources import FeatureSource, MlpNeuronSource, SaeLatentSource, skip_first_tokens  # noqa: E402

PLAN = SamplingPlan(top_k=10, random_windows=6, quantiles=5, per_quantile=2)
BEGIN, END = "<!-- collect-wide: begin -->", "<!-- collect-wide: end -->"

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--sources", default="topk,jumprelu,neurons", help="comma-separated: topk, jumprelu, neurons")
parser.add_argument("--latents", type=int, default=131_072)
parser.add_argument("--k", type=int, default=64, help="TopK: latents kept per token")
parser.add_argument("--layer", type=int, default=15, help="the dictionary reads blocks.LAYER.hook_resid_post")
parser.add_argument("--windows", type=int, default=128, help="windows per source")
parser.add_argument("--window-tokens", type=int, default=32)
parser.add_argument("--batch", type=int, default=16, help="windows per forward pass")
parser.add_argument("--skip-first-tokens", type=int, default=AUTO_SKIPPED_TOKENS, help="tokens not read per window")
parser.add_argument("--child", default="", help=argparse.SUPPRESS)  # one source, in a fresh process
parser.add_argument("--out", type=Path, default=ROOT / "results/benchmarks/scale.md")
args = parser.parse_args()


def rss_mib() -> float:
    """Returns this process's resident memory now, in MiB."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def random_dictionary(subject: SubjectModel, kind: str) -> SparseAutoencoder:
    """Returns a random TopK or JumpReLU SAE of `--latents` latents reading the residual stream at `--layer`.

    JumpReLU thresholds put each latent's firing rate near 1 % of tokens (its 99th percentile on a few
    windows), about what a trained one shows; TopK keeps `--k` latents per token."""
    g = torch.Generator().manual_seed(0)
    width = subject.model.config.hidden_size
    w_enc = torch.randn(width, args.latents, generator=g) / width**0.5
    sae = SparseAutoencoder(
        W_enc=w_enc,
        b_enc=torch.zeros(args.latents),
        W_dec=(w_enc / w_enc.norm(dim=0)).T.contiguous(),
        b_dec=torch.zeros(width),
        hook_name=f"blocks.{args.layer}.hook_resid_post",
        k=args.k if kind == "topk" else None,
    )
    if kind == "jumprelu":
        probe = SaeLatentSource(subject, sae, list(range(args.latents)))
        ids = torch.tensor([w.token_ids for w in windows(8)], device=subject.device)
        with torch.inference_mode():
            pre = probe.activations(ids).flatten(0, 1)
        sae.threshold = pre.topk(max(1, pre.shape[0] // 100), dim=0).values[-1]  # ~ the 99th percentile
    return sae.to(subject.device)


def windows(n: int) -> list[Window]:
    """Returns the first `n` windows of the built-in corpus."""
    return list(iter_windows(subject.tokenizer, "builtin:python-docs", window_tokens=args.window_tokens, max_windows=n))


def state_bytes(sampler: ExemplarSampler) -> dict[str, int]:
    """Returns the bytes of each tensor the sampler keeps (its checkpointed state and the merge's scratch table)."""
    sizes = {name: getattr(sampler, name).nbytes for name in ExemplarSampler._TENSORS}
    sizes["pending"] = sampler._pending_rows().nbytes if sampler.compiled else 0
    return sizes


def measure(kind: str) -> dict[str, Any]:
    """Collects `--windows` windows of one source; returns its timings, memory and state sizes."""
    read: FeatureSource
    if kind == "neurons":
        read = MlpNeuronSource(subject, list(range(subject.n_layers)), list(range(subject.d_mlp)))

        def bare(ids: torch.Tensor) -> None:
            subject.model.model(input_ids=ids)  # type: ignore[operator]

    else:
        read = SaeLatentSource(subject, random_dictionary(subject, kind), list(range(args.latents)))

        def bare(ids: torch.Tensor) -> None:
            read.activations(ids)

    source = skip_first_tokens(read, args.skip_first_tokens)  # by default as in a run: the first tokens not read
    corpus = windows(args.windows)
    sampler = ExemplarSampler(source.n_features, args.window_tokens, PLAN, subject.device, source.skipped_tokens)
    first = torch.tensor([w.token_ids for w in corpus[: args.batch]], device=subject.device)
    with torch.inference_mode():  # warm-up: the first update loads (or compiles) the CPU merge
        bare(first)
        ExemplarSampler(source.n_features, args.window_tokens, PLAN, subject.device, source.skipped_tokens).update(
            source.activation_chunks(first), corpus[: args.batch]
        )
    bare_s = collect_s = 0.0
    memory: list[float] = []
    for start in range(0, len(corpus), args.batch):
        batch = corpus[start : start + args.batch]
        ids = torch.tensor([w.token_ids for w in batch], device=subject.device)
        with torch.inference_mode():
            t0 = time.perf_counter()
            bare(ids)
            t1 = time.perf_counter()
            sampler.update(source.activation_chunks(ids), batch)
            t2 = time.perf_counter()
        bare_s, collect_s = bare_s + t1 - t0, collect_s + t2 - t1
        memory.append(rss_mib())
    quarter = max(1, len(memory) // 4)
    sizes = state_bytes(sampler)
    return {
        "kind": kind,
        "features": source.n_features,
        "windows": len(corpus),
        "bare_tps": len(corpus) * args.window_tokens / bare_s,
        "collect_tps": len(corpus) * args.window_tokens / collect_s,
        "rss_first": memory[0],
        "rss_first_quarter": max(memory[:quarter]),
        "rss_last_quarter": max(memory[-quarter:]),
        "rss_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "state_bytes": sum(sizes.values()),
        "state_parts": sizes,
        "load": os.getloadavg()[0],
    }


if args.child:
    subject = load_subject_model("smollm2-135m", "cpu", "float32")
    print(json.dumps(measure(args.child)))
    sys.exit(0)

results = []
for kind in args.sources.split(","):
    command = [sys.executable, __file__, "--child", kind, "--windows", str(args.windows), "--batch", str(args.batch)]
    command += ["--window-tokens", str(args.window_tokens), "--latents", str(args.latents), "--k", str(args.k)]
    command += ["--layer", str(args.layer), "--skip-first-tokens", str(args.skip_first_tokens)]
    results.append(
        json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.split("\n")[-2])
    )
    print(results[-1], flush=True)

names = {
    "topk": f"TopK SAE (k = {args.k}), {args.latents:,} latents, blocks.{args.layer}.hook_resid_post",
    "jumprelu": f"JumpReLU SAE (~1 % density), {args.latents:,} latents, blocks.{args.layer}.hook_resid_post",
    "neurons": "all MLP neurons, 30 x 1,536",
}
bare = {
    "topk": f"body to block {args.layer} + encoder",
    "jumprelu": f"body to block {args.layer} + encoder",
    "neurons": "model body",
}
lines = [
    BEGIN,
    "## Collection for wide dictionaries",
    "",
    f"CPU ({torch.get_num_threads()} threads), float32; {args.windows} windows x {args.window_tokens} tokens per "
    f"source, batch {args.batch}; kept per latent: top {PLAN.top_k}, {PLAN.quantiles} quantiles x "
    f"{PLAN.per_quantile}, {PLAN.random_windows} random. Random weights. Each source in a fresh process; bare "
    "and collect alternate batch by batch. Command: "
    f"`{' '.join(['benchmarks/collect_wide.py', *sys.argv[1:]])}`",
    "",
    "| source | features | bare pass | bare tokens/s | collect tokens/s | ratio | RSS after batch 1 "
    "| RSS, first quarter | RSS, last quarter | peak RSS | sampler state per feature | load (1 min) |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
]
for r in results:
    lines.append(
        f"| {names[r['kind']]} | {r['features']:,} | {bare[r['kind']]} | {r['bare_tps']:,.0f} "
        f"| {r['collect_tps']:,.0f} "
        f"| {r['collect_tps'] / r['bare_tps']:.2f} | {r['rss_first']:,.0f} MiB | {r['rss_first_quarter']:,.0f} MiB "
        f"| {r['rss_last_quarter']:,.0f} MiB | {r['rss_peak']:,.0f} MiB | {r['state_bytes'] / r['features']:,.0f} B "
        f"| {r['load']:.1f} |"
    )
parts = results[0]["state_parts"]
lines += [
    "",
    f"Sampler state of the first source ({results[0]['features']:,} features), bytes per feature: "
    + ", ".join(f"{name} {size / results[0]['features']:,.0f}" for name, size in parts.items())
    + ". The per-token pool (kept windows x tokens x 4 bytes) dominates; nothing grows with the windows seen "
    "except the token ids of windows that kept items point to.",
    END,
]
table = "\n".join(lines)
print(table)
text = args.out.read_text(encoding="utf-8") if args.out.exists() else ""  # re-read just before writing
if BEGIN in text and END in text:
    text = text[: text.index(BEGIN)] + table + text[text.index(END) + len(END) :]
else:
    text = (text.rstrip() + "\n\n" if text else "# Scale benchmarks\n\n") + table + "\n"
args.out.parent.mkdir(parents=True, exist_ok=True)
args.out.write_text(text, encoding="utf-8")
