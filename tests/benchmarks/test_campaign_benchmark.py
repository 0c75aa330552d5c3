"""The campaign benchmark stays runnable: every stage against its knowing server, a few features, no latency,
with 429s injected, each feature done exactly once and every score 1.0."""

from __future__ import annotations

from pathlib import Path

from benchmarks.campaign_runs import run_stage, stages
from benchmarks.campaign_server import ServerProcess


def test_every_stage_of_the_campaign_benchmark_checks_out(tmp_path: Path) -> None:
    server = ServerProcess(0.0, 0.05)
    try:
        measured = [run_stage(stage, server, 4, 6, 4, tmp_path) for stage in stages(4)]
    finally:
        server.close()
    assert [m.checks for m in measured] == [[]] * 5
    assert [m.calls for m in measured] == [6, 24, 24, 24, 6]  # explain; 4 windows: 4 calls or 1 list
    assert sum(m.server["429"] for m in measured) > 0 and not any(m.errors for m in measured)
    generate, at_once = measured[1], measured[2]
    assert at_once.output_tokens == 0 < generate.output_tokens
