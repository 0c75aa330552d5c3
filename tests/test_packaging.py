"""The package as a user installs it: a wheel holds the prompts (the top-level prompts/ folder, installed
as `autointerp/prompt_templates/`) and no top-level `flows` package, and an installed copy finds its prompts
from any working directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    source = out / "source"  # setuptools writes build/ and *.egg-info beside the sources: keep the checkout clean
    skip = (
        ".venv",
        ".git",
        "results",
        "build",
        "*.egg-info",
        "__pycache__",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
    )
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*skip))
    command = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        str(out),
        str(source),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    [built] = out.glob("autointerp-*.whl")
    return built


def test_the_wheel_holds_the_prompts_and_no_top_level_flows(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    templates = sorted(p.name for p in (ROOT / "prompts").glob("*.jinja"))  # the top-level folder, installed
    assert templates and sorted(n.rsplit("/", 1)[1] for n in names if n.endswith(".jinja")) == templates
    assert all(f"autointerp/prompt_templates/{name}" in names for name in templates)
    assert not [n for n in names if n.startswith(("prompts/", "benchmarks/", "tests/"))]
    assert "autointerp/simulators/smollm2-135m-sim/adapter.safetensors" in names  # the default simulator
    assert "autointerp/simulators/smollm2-135m-sim/adapter.json" in names
    assert "autointerp/explainers/smollm2-135m-explainer/adapter.safetensors" in names  # the default explainer
    assert "autointerp/explainers/smollm2-135m-explainer/adapter.json" in names
    assert "autointerp/flows/label_features.py" in names
    assert not [n for n in names if n.startswith("flows/")]
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[autointerp.scorers]" in text and "[autointerp.feature_sources]" in text


def test_an_installed_copy_finds_its_prompts_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)]
    assert subprocess.run(command, capture_output=True, text=True, timeout=300).returncode == 0
    probe = (
        "import autointerp, autointerp.prompts as p; print(autointerp.__file__); print(p.load_prompt('simulate').hash)"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    env.pop("AUTOINTERP_PROMPTS", None)
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    location, digest = result.stdout.split()
    assert location.startswith(str(target)) and len(digest) == 16
