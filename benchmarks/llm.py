"""Benchmark: explaining features through a local OpenAI-compatible server, at concurrency 1 and 16.

    .venv/bin/python benchmarks/llm.py [--features 100] [--served-features 100] [--max-tokens 8]

1. Starts `transformers serve` with the cached SmolLM2-135M-Instruct folder on loopback.
2. Writes a run of synthetic features (3 exemplars each, one marked word) to a temporary DuckDB.
3. Explains every feature with `run_explain` (the real prompt, backend, recorder and store
   writes; response cache off) at concurrency 1, then 16: features/s.
4. Client-side overhead per call: the same pipeline against a loopback server that answers
   instantly, so nearly all the time is the client's (prompt, SDK, HTTP, recording, DuckDB).
Writes results/benchmarks/llm.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from autointerp.config import RunConfig, load_config
from autointerp.explain.stage import run_explain
from autointerp.llm import LLMSession
from autointerp.llm.serve import TransformersServer
from autointerp.store.database import Store
from autointerp.subject.model import prepare_model_folder

RESULTS = Path(__file__).resolve().parents[1] / "results" / "benchmarks" / "llm.md"
WORDS = ["apple", "river", "seven", "Paris", "quickly", "blue", "justice", "walking", "whom", "]"]


def write_features(store: Store, run_id: str, count: int) -> None:
    """Stores `count` features; feature i fires on one word in three short exemplars."""
    store.migrate()
    store.start_run(run_id, {}, "benchmark", "benchmark", None)
    features, exemplars = [], []
    for i in range(count):
        fid = f"bench/mlp.0/{i}"
        features.append(
            {"run_id": run_id, "id": fid, "model": "bench", "hook": "mlp.0", "kind": "mlp", "idx": i,
             "max_activation": 5.0, "mean_activation": 0.1, "density": 0.01, "tokens": 1000, "dead": False}
        )  # fmt: skip
        word = f" {WORDS[i % len(WORDS)]}{i}"
        for rank in range(3):
            tokens = ["In", " the", " text", word, " appears", f" again{rank}", "."]
            activations = [0.0, 0.0, 0.0, 5.0 - rank, 0.5, 0.0, 0.0]
            exemplars.append(
                {"run_id": run_id, "feature_id": fid, "kind": "top", "rank": rank, "doc_id": rank,
                 "token_offset": 0, "token_ids": list(range(7)), "tokens": tokens, "activations": activations,
                 "max_activation": max(activations), "split": "explain"}
            )  # fmt: skip
    store.write_collection(run_id, features, exemplars)


def config_for(db: Path, spec: str, concurrency: int, max_tokens: int) -> RunConfig:
    return load_config(
        None,
        [
            f"store.path='{db}'",
            f"explainer.model='{spec}'",
            f"explainer.max_tokens={max_tokens}",
            "explainer.retries=0",
            "explainer.top_tokens_candidate=false",  # the explainer's calls alone, nothing simulated
            f"llm.concurrency={concurrency}",
            "llm.cache=false",
        ],
    )


def explain_run(db: Path, spec: str, concurrency: int, features: int, max_tokens: int) -> dict[str, Any]:
    """Explains `features` fresh features at `concurrency`; returns timings and call statistics."""
    store = Store(db)
    run_id = f"c{concurrency}-{time.monotonic_ns()}"
    write_features(store, run_id, features)
    config = config_for(db, spec, concurrency, max_tokens)
    session = LLMSession.for_run(config.llm, store, run_id)
    started = time.perf_counter()
    result = run_explain(config, store, run_id, session)
    elapsed = time.perf_counter() - started
    calls = store.query("SELECT latency_s, error, output_tokens FROM llm_calls WHERE run_id = ?", [run_id])
    return {
        "concurrency": concurrency,
        "features": features,
        "explained": result.done,
        "seconds": elapsed,
        "features_per_s": features / elapsed,
        "calls": len(calls),
        "failed_calls": sum(c["error"] is not None for c in calls),
        "mean_call_latency_ms": 1000 * sum(c["latency_s"] for c in calls) / len(calls),
        "mean_output_tokens": sum(c["output_tokens"] for c in calls) / len(calls),
    }


class InstantServer:
    """A chat-completions server on loopback that answers at once with a fixed explanation."""

    def __init__(self) -> None:
        body = json.dumps(
            {"id": "x", "object": "chat.completion", "created": 0, "model": "instant",
             "choices": [{"index": 0, "finish_reason": "stop",
                          "message": {"role": "assistant", "content": "The neuron fires on the word apple."}}],
             "usage": {"prompt_tokens": 100, "completion_tokens": 8, "total_tokens": 108}}
        ).encode()  # fmt: skip

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", 0)))
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.spec = f"openai-compatible:http://127.0.0.1:{self.server.server_address[1]}/v1#instant"


def report(served: list[dict[str, Any]], instant: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """Returns the markdown report."""
    load = os.getloadavg()
    lines = [
        "# LLM call path: explaining features through a local OpenAI-compatible server",
        "",
        f"`benchmarks/llm.py --features {args.features} --served-features {args.served_features} "
        f"--max-tokens {args.max_tokens}`, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {os.cpu_count()} CPU cores "
        f"({platform.processor() or platform.machine()}), load average at the end "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (the machine is shared: other work ran at the same time).",
        "",
        "Each feature: the real explain prompt (3 exemplars, marked tokens), `run_explain` with its thread pool, "
        "the openai-compatible backend (official `openai` SDK), the call recorder, and one DuckDB transaction per "
        "batch of finished features. Response cache off; retries of unparseable answers off.",
        "",
        "## `transformers serve` (SmolLM2-135M-Instruct, CPU, default settings)",
        "",
        "| concurrency | features | explained | seconds | features/s | mean call latency (ms) | mean output tokens |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in served:
        lines.append(
            f"| {r['concurrency']} | {r['features']} | {r['explained']} | {r['seconds']:.1f} | "
            f"{r['features_per_s']:.2f} | {r['mean_call_latency_ms']:.0f} | {r['mean_output_tokens']:.1f} |"
        )
    lines += [
        "",
        "## Client-side overhead (a loopback server that answers instantly)",
        "",
        "| concurrency | features | seconds | features/s | overhead per call (ms, wall / calls) |"
        " mean call latency (ms, SDK + HTTP) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in instant:
        lines.append(
            f"| {r['concurrency']} | {r['features']} | {r['seconds']:.2f} | {r['features_per_s']:.1f} | "
            f"{1000 * r['seconds'] / r['calls']:.1f} | {r['mean_call_latency_ms']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=100, help="features per run, instant server")
    parser.add_argument("--served-features", type=int, default=100, help="features per run, transformers serve")
    parser.add_argument("--max-tokens", type=int, default=8)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.duckdb"
        instant_server = InstantServer()
        instant = [explain_run(db, instant_server.spec, c, args.features, args.max_tokens) for c in (1, 16)]
        instant_server.server.shutdown()
        folder, _ = prepare_model_folder("smollm2-135m")
        with TransformersServer(folder) as server:
            explain_run(db, server.spec, 1, 2, args.max_tokens)  # warm-up: the first answers are slow
            served = [explain_run(db, server.spec, c, args.served_features, args.max_tokens) for c in (1, 16)]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(report(served, instant, args))
    print(RESULTS.read_text())


if __name__ == "__main__":
    main()
