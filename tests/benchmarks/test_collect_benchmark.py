"""benchmarks/collect.py stays runnable: one layer's neurons, a few windows, its peak-RSS children and the
DuckDB write, and the report it writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # three processes load the real subject model
def test_the_collect_benchmark_runs_at_a_tiny_size(tmp_path: Path) -> None:
    out = tmp_path / "collect.md"
    tiny = ["--windows", "8", "--batch", "4", "--window-tokens", "8", "--rss-windows", "2", "--layers", "1"]
    command = [sys.executable, str(ROOT / "benchmarks" / "collect.py"), *tiny, "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = out.read_text(encoding="utf-8")
    assert report.startswith("# Collection benchmark: all 1,536 MLP neurons")
    assert "| ratio collect / bare (goal >= 0.95) |" in report and "| peak RSS, 20 windows (10x) |" in report
