"""benchmarks/llm.py stays runnable: features explained through a loopback OpenAI-compatible server by the
real explain stage, at two concurrencies, and the report built from the numbers."""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.llm import InstantServer, explain_run, report


def test_the_llm_benchmark_explains_through_a_loopback_server(tmp_path: Path) -> None:
    server = InstantServer()
    try:
        runs = [explain_run(tmp_path / "bench.duckdb", server.spec, concurrency, 3, 8) for concurrency in (1, 2)]
    finally:
        server.server.shutdown()
    assert [(r["explained"], r["calls"], r["failed_calls"]) for r in runs] == [(3, 3, 0), (3, 3, 0)]
    text = report(runs, runs, argparse.Namespace(features=3, served_features=3, max_tokens=8))
    assert text.startswith("# LLM call path") and "| 2 | 3 | 3 |" in text
