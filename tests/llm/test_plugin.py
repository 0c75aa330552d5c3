"""A third-party backend installed with pip, found through the `autointerp.backends` entry points.

`tests/plugin_example/` is a package of its own (as a user would publish one); the test
installs it with pip into a temporary folder, offline, and explains features through it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from autointerp.config import load_config
from autointerp.explain.stage import run_explain
from autointerp.llm import available_backends, backend_kind, get_backend, register_backend
from autointerp.store.database import Store
from tests.conftest import session_of
from tests.llm.synthetic import write_synthetic_run

PLUGIN_SOURCE = Path(__file__).resolve().parents[1] / "plugin_example"


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Pip-installs the example plugin into a temporary folder on sys.path; removes it afterwards."""
    work = tmp_path_factory.mktemp("plugin")
    source = work / "source"
    shutil.copytree(PLUGIN_SOURCE, source)  # pip builds in place; keep the repository clean
    target = work / "site"
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
    result = subprocess.run([*command, "--target", str(target), str(source)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    sys.path.insert(0, str(target))
    try:
        yield target
    finally:
        sys.path.remove(str(target))
        sys.modules.pop("autointerp_echo", None)


def test_the_installed_plugin_is_a_registered_backend(installed_plugin: Path) -> None:
    assert (installed_plugin / "autointerp_echo-0.1.0.dist-info" / "entry_points.txt").exists()
    assert "echo" in available_backends()
    backend = get_backend("echo:anything")
    assert (type(backend).__module__, backend.name) == ("autointerp_echo", "echo:anything")


def test_the_plugin_passes_the_preflight_through_its_own_checks(installed_plugin: Path) -> None:
    from autointerp.cli.preflight import check_models, check_scorers, models_in_use

    kind = backend_kind("echo")
    assert type(kind).__module__ == "autointerp_echo"  # the plugin's own kind, asked like the built-ins
    config = load_config(
        None, ["explainer.model=echo:anything", "score.methods=['word-match']", "experiments.lowest_n=0"]
    )
    assert models_in_use(config) == {"echo:anything": ["explainer.model"]}  # word-match declares no model
    best_of = config.model_copy(update={"explainer": config.explainer.model_copy(update={"best_of": 3})})
    assert models_in_use(best_of)[config.score.simulator.model] == ["score.simulator.model"]  # it simulates them
    assert check_models(config) == []  # its check found nothing wrong: no "first checked when called"
    assert check_scorers(config) == []


def test_a_plain_factory_is_a_backend_checked_when_called(installed_plugin: Path) -> None:
    from autointerp_echo import EchoBackend  # type: ignore[import-not-found]

    from autointerp.cli.preflight import check_model_specs

    register_backend("plain-echo", EchoBackend)
    [warning] = check_model_specs({"plain-echo:m": ["explainer.model"]})
    assert warning.startswith("explainer.model 'plain-echo:m': ") and "first checked when it is called" in warning
    assert isinstance(get_backend("plain-echo:m"), EchoBackend)


def test_a_run_explains_features_through_the_plugin(installed_plugin: Path, tmp_path: Path) -> None:
    config = load_config(
        None,
        [
            f"store.path='{tmp_path / 'runs.duckdb'}'",
            "explainer.model=echo:anything",
            "llm.cache=false",
            "explainer.top_tokens_candidate=false",  # the plugin's answers, as written
        ],
    )
    store = Store(config.store.path)
    write_synthetic_run(store, "plugin", 3)
    assert run_explain(config, store, "plugin", session_of(config, store, "plugin")).done == 3
    explanations = sorted(store.explanations("plugin"), key=lambda e: e["feature_id"])
    assert [e["text"] for e in explanations] == [f"the token word{i}" for i in range(3)]
    assert {e["explainer"] for e in explanations} == {"echo:anything"}
    calls = store.query("SELECT backend, model, cost FROM llm_calls WHERE run_id = 'plugin'")
    assert calls == [{"backend": "echo", "model": "anything", "cost": 0.0}] * 3


def test_a_plugin_scorer_runs_in_a_flow(installed_plugin: Path, tmp_path: Path, prefect_harness: None) -> None:
    from autointerp.flows.label_features import label_features
    from autointerp.score import SCORERS
    from tests.conftest import tiny_config

    assert "word-match" in SCORERS.names()
    config = tiny_config(
        tmp_path,
        "explainer.model='echo:any'",
        "score.methods=['word-match']",
        "experiments.lowest_n=0",
        "experiments.on_disagreement=false",
    )
    run_id = label_features(config.model_dump(mode="json"))
    store = Store(config.store.path)
    scores = store.query("SELECT * FROM scores WHERE run_id = ? AND metric = 'word_match_auroc'", [run_id])
    assert len(scores) == len(store.explanations(run_id)) == 3
    assert {s["scorer"] for s in scores} == {"word-match"}
    assert store.runs()[0]["status"] == "completed"
