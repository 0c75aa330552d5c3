"""benchmarks/collect_wide.py stays runnable: a small random JumpReLU dictionary (thresholds from a probe pass), a
few windows, and the section it writes into a report without touching the rest of the file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # a child process loads the real subject model
def test_the_wide_collection_benchmark_replaces_only_its_section(tmp_path: Path) -> None:
    out = tmp_path / "scale.md"
    out.write_text(
        "# Scale\n\nthe store's table\n\n<!-- collect-wide: begin -->\nold\n<!-- collect-wide: end -->\n\ntail\n"
    )
    tiny = ["--sources", "jumprelu", "--latents", "512", "--k", "8", "--windows", "8", "--batch", "4"]
    command = [sys.executable, str(ROOT / "benchmarks" / "collect_wide.py"), *tiny, "--window-tokens", "8"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    report = out.read_text(encoding="utf-8")
    assert report.startswith("# Scale\n\nthe store's table\n\n<!-- collect-wide: begin -->\n## Collection for wide")
    assert report.endswith("<!-- collect-wide: end -->\n\ntail\n") and "\nold\n" not in report
    rows = [line for line in report.splitlines() if line.startswith("| JumpReLU SAE")]
    assert len(rows) == 1 and "| 512 |" in rows[0]
