"""Benchmark: a labeling campaign against an OpenAI-compatible server with a fixed latency.

    PYTHONPATH=. .venv/bin/python benchmarks/campaign.py [--features 1000] [--slow-features 20]
        [--windows 4] [--latency 0.5] [--rate-429 0.01]

1. Starts a loopback OpenAI-compatible server in its own process (asyncio, HTTP/1.1 keep-alive) that
   answers every request after a fixed latency and knows the right answer: feature i fires on one
   made-up word, the server explains it as "the word <w>", simulates 10 on that word and 0 elsewhere,
   says yes where the word is. It serves chat completions (generated text, and first-token
   `top_logprobs` for P("yes")) and vLLM-style `/v1/completions` with `echo` (prompt log-probabilities
   for all-at-once simulation). Token counts are those of a simple word/digit/punctuation tokenizer.
   A small share of requests gets HTTP 429 with `retry-after-ms`, which the client must retry.
2. Writes synthetic features to a fresh DuckDB per (stage, concurrency): 8 explanation windows of 32
   tokens each and `--windows` held-out windows (half firing, half not) per feature.
3. Runs each stage with the real pipeline (`run_explain` / `run_score`: feature pool, backend, recorder,
   limiter, store writes) at concurrency 1 (on `--slow-features` features: at 0.5 s a call that is what
   fits in minutes) and 16 and 64 (on `--features`): features/hour, calls and tokens per feature,
   client CPU per call, 429s retried; checks that every feature was explained / scored exactly once
   and that the scores are ~1.0 (the server knows the answer).
4. Client overhead per call: the same stages against the same server with no latency, where a call's
   wall time is all client (prompt, SDK, HTTP, recording, DuckDB) plus the server's few hundred µs.
Writes results/benchmarks/campaign.md. The server is `campaign_server`, the runs and their checks
`campaign_runs`, the report `campaign_report`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.campaign_report import measured_from, measurements, render  # noqa: E402
from benchmarks.campaign_runs import Measured, run_stage, stages  # noqa: E402
from benchmarks.campaign_server import ServerProcess  # noqa: E402

RESULTS = ROOT / "results" / "benchmarks" / "campaign.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--features", type=int, default=1000)
    parser.add_argument("--slow-features", type=int, default=20)
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--rate-429", type=float, default=0.01)
    parser.add_argument("--zero-features", type=int, default=200, help="features for the no-latency overhead runs")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--json", type=Path, help="also write the measurements here (for --before, --from-json)")
    parser.add_argument("--from-json", type=Path, help="run nothing: write the report of these measurements")
    parser.add_argument(
        "--before", type=Path, help="measurements (--json) of the same command on the tree before a change: "
        "the report opens with a before / after table of client CPU per call and features per hour"
    )  # fmt: skip
    args = parser.parse_args()
    slow: list[Measured] = []
    fast: list[Measured] = []
    zero: list[Measured] = []
    if args.from_json:
        slow, fast, zero = measured_from(json.loads(args.from_json.read_text(encoding="utf-8")))
    else:
        run_all(args, slow, fast, zero)
    if args.json:
        args.json.write_text(json.dumps(measurements(slow, fast, zero), indent=1), encoding="utf-8")
    before = json.loads(args.before.read_text(encoding="utf-8")) if args.before else None
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(args, slow, fast, zero, before), encoding="utf-8")
    print(f"report written to {args.output}")


def run_all(args: argparse.Namespace, slow: list[Measured], fast: list[Measured], zero: list[Measured]) -> None:
    """Runs every stage at every concurrency, with and without latency, appending what it measured."""
    os.environ.setdefault("AUTOINTERP_LLM_TIMEOUT", "30")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        server = ServerProcess(args.latency, args.rate_429)
        instant = ServerProcess(0.0, 0.0)
        try:
            for stage in stages(args.windows):
                for concurrency, count, into in [(1, args.slow_features, slow)] + [
                    (c, args.features, fast) for c in args.concurrency
                ]:
                    measured = run_stage(stage, server, concurrency, count, args.windows, folder)
                    into.append(measured)
                    print(
                        f"{stage.name} c{concurrency}: {measured.seconds:.1f} s, {measured.per_hour:,.0f}/h, "
                        f"{measured.cpu_ms_per_call:.1f} ms CPU/call, checks {measured.checks or 'ok'}",
                        flush=True,
                    )
                for concurrency in (1, 64):
                    zero.append(run_stage(stage, instant, concurrency, args.zero_features, args.windows, folder))
                    print(
                        f"  no latency c{concurrency}: {1000 * zero[-1].seconds / zero[-1].calls:.1f} ms/call",
                        flush=True,
                    )
        finally:
            server.close()
            instant.close()


if __name__ == "__main__":
    main()
