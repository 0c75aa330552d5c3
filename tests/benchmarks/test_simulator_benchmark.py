"""benchmarks/simulator.py stays runnable: two features per set, a small corpus, the few-shot row measured
and the stored rows read from the shipped adapter's adapter.json."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # simulates with the real local model
def test_the_simulator_benchmark_runs_at_a_tiny_size(tmp_path: Path) -> None:
    out = tmp_path / "simulator.md"
    command = [sys.executable, str(ROOT / "benchmarks" / "simulator.py"), "--features", "2", "--max-windows", "64"]
    command += ["--prior", "keep"]  # adapter.json's rows were measured on predictions as read: reused, not run
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([*command, "--output", str(out)], capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    report = out.read_text(encoding="utf-8")
    assert report.startswith("# Simulators on features whose truth is known")
    assert "| held-out families | untrained, few-shot | 2 |" in report
    assert "| planted benchmark | untrained, few-shot | 2 |" in report
    assert "Simulation prior (`score.simulation_prior`): keep" in report and "| adapter.json |" in report
