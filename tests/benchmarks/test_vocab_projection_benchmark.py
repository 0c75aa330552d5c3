"""The output-evidence benchmark stays runnable: the whole script at a tiny size (one layer's neurons, two
steered features on one short prompt), report included."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from autointerp.subject.model import SubjectModel
from benchmarks import vocab_projection


def test_the_vocab_projection_benchmark_writes_its_report(
    subject: SubjectModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "outputs.md"
    tiny = ["--layers", "1", "--repeats", "1", "--steer-features", "2", "--steer-prompts", "1", "--steer-tokens", "4"]
    monkeypatch.setattr(sys, "argv", ["vocab_projection.py", *tiny, "--out", str(out)])
    vocab_projection.main()
    report = out.read_text(encoding="utf-8")
    assert report.startswith("# Output evidence: direct-path projection and steering cost")
    assert "| 1,536 | 10 | 512 |" in report  # one layer's neurons, top 10, blocks of 512
    assert "| 1 | 3 |" in report  # 1 prompt: 2 steered rows and 1 clean row
