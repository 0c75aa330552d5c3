"""The campaign benchmark stays runnable: every stage against its knowing server, a few features, no latency,
with 429s injected, each feature done exactly once and every score 1.0; and the whole script at a tiny size,
report included."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from benchmarks import campaign
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


def test_the_campaign_benchmark_writes_its_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "campaign.md"
    tiny = ["--features", "3", "--slow-features", "2", "--zero-features", "2", "--windows", "2", "--latency", "0"]
    monkeypatch.setattr(sys, "argv", ["campaign.py", *tiny, "--rate-429", "0", "--output", str(out)])
    monkeypatch.setenv("AUTOINTERP_LLM_TIMEOUT", "30")  # what main() sets by default, undone after the test
    campaign.main()
    report = out.read_text(encoding="utf-8")
    assert report.startswith("# Labeling campaign over HTTP")
    assert "## Goals" in report and "## 100,000 features" in report and "NO:" not in report


def test_the_knowing_server_answers_a_malformed_request_with_400() -> None:
    server = ServerProcess(0.0, 0.0)
    try:
        request = urllib.request.Request(f"{server.url}/v1/completions", data=b'{"model": "campaign"}', method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 400 and "prompt" in json.loads(refused.value.read())["error"]["message"]
        assert server.stats()["requests"] == 1  # and it still serves
    finally:
        server.close()
