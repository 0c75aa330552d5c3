"""Scheduled runs: the deployment, fresh run ids, and incremental explaining (new or stale features only)."""

from __future__ import annotations

import asyncio
import inspect
import math
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from autointerp.errors import ConfigError
from autointerp.pipeline.common import needing_explanation
from autointerp.records import Feature
from autointerp.store.database import Store, now
from tests.conftest import tiny_config


def test_deployment_has_the_schedule_and_config(tmp_path: Path) -> None:
    from autointerp.flows.schedule import build_deployment, scheduled_config

    data = tiny_config(tmp_path).model_dump(mode="json")
    deployment = build_deployment(data, cron="0 2 * * *")
    assert deployment.name == "nightly"
    assert deployment.parameters == {"config_data": data}
    assert deployment.schedules[0].schedule.cron == "0 2 * * *"
    every_hour = build_deployment(data, interval=3600, name="hourly")
    assert every_hour.schedules[0].schedule.interval.total_seconds() == 3600
    for kwargs in ({}, {"cron": "0 2 * * *", "interval": 60.0}, {"interval": -1.0}):
        with pytest.raises(ConfigError):
            build_deployment(data, **kwargs)  # type: ignore[arg-type]
    for interval in (math.nan, math.inf, 1e20):  # tracebacks from Prefect's timedelta before
        with pytest.raises(ConfigError, match=r"^--interval must be a number of seconds above 0 and at most"):
            build_deployment(data, interval=interval)
    for name, why in (("a/b", "holds /;"), ("x%y&z", "holds % &;"), ("  ", "must not be empty")):
        with pytest.raises(ConfigError, match=rf"^--name .*{re.escape(why)}"):
            build_deployment(data, interval=60.0, name=name)
    with pytest.raises(ConfigError):
        build_deployment({**data, "features": {"lyer": 3}}, cron="0 2 * * *")
    for bad_cron in ("61 * * * *", "hello"):  # a pydantic traceback from Prefect before
        with pytest.raises(
            ConfigError, match=rf"^--cron '{re.escape(bad_cron)}' is not a cron schedule \(Invalid cron"
        ):
            build_deployment(data, cron=bad_cron)

    scheduled = scheduled_config(data, datetime(2026, 11, 3, 2, 0, tzinfo=UTC))
    assert scheduled["run_id"].endswith("-20261103T020000Z") and scheduled["run_id"].startswith("run-")
    assert scheduled["schedule"]["incremental"] is True


def explanation_row(run_id: str, feature_id: str, text: str, **extra: str) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "run_id": run_id,
        "feature_id": feature_id,
        "iteration": 0,
        "explainer": "local:smollm2-135m",
        "prompt_hash": "abc123abc123abc1",
        "text": text,
        "created_at": now(),
        **extra,
    }


def test_stale_means_another_explainer_or_prompt(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    store.migrate()
    old = [
        explanation_row("old", "smollm2-135m/mlp.15/0", "a"),
        explanation_row("old", "smollm2-135m/mlp.15/1", "b", prompt_hash="older-prompt"),
        explanation_row("old", "smollm2-135m/mlp.15/2", "c", explainer="openai:gpt-4o-mini"),
    ]
    store.write_results({"explanations": old})
    features = [
        Feature("new", f"smollm2-135m/mlp.15/{i}", "smollm2-135m", "mlp.15", "neuron", i, 1.0) for i in range(4)
    ]
    todo = needing_explanation(store, "new", features, "local:smollm2-135m", "abc123abc123abc1")
    assert [f.idx for f in todo] == [1, 2, 3]  # stale prompt, other explainer, new feature


@pytest.mark.slow
def test_triggered_deployment_runs_are_incremental(tmp_path: Path, prefect_harness: None) -> None:
    from prefect.deployments import run_deployment
    from prefect.flow_engine import run_flow

    from autointerp.flows.schedule import build_deployment, scheduled_label_features

    cheap = (
        "corpus.max_windows=16",
        "experiments.lowest_n=0",
        "score.methods=['simulation']",
        "score.distractor=false",
    )
    config = tiny_config(tmp_path, "features.indices=[5]", *cheap)
    data = config.model_dump(mode="json")
    store = Store(config.store.path)
    deployment = build_deployment(data, cron="0 2 * * *")

    async def create_run() -> Any:
        """Registers the deployment and creates one of its flow runs now, without waiting for the clock."""
        started = run_deployment(await deployment.apply(), timeout=0)
        assert inspect.isawaitable(started)  # sync-compatible: a coroutine inside an event loop
        return await started

    def trigger() -> Any:
        flow_run = asyncio.run(create_run())
        return run_flow(scheduled_label_features, flow_run=flow_run, parameters=flow_run.parameters)

    first = trigger()
    second = trigger()
    runs = store.run_progress()
    assert len(runs) == 2, (first, second)
    assert all(r["status"] == "completed" for r in runs)
    newest, oldest = runs
    assert newest["id"] != oldest["id"] and newest["id"].startswith(f"{config.resolved_run_id()}-")
    assert oldest["explained"] == 1 and oldest["scored"] == 1
    assert newest["features"] == 1 and newest["explained"] == 0  # nothing new, nothing stale: no new explanations
    assert not store.query("SELECT 1 FROM llm_calls WHERE run_id = ? AND role = 'explain'", [newest["id"]])

    # A new feature in the next scheduled run is the only one explained.
    grown_config = tiny_config(tmp_path, "features.indices=[5, 1201]", *cheap)
    grown = scheduled_label_features(grown_config.model_dump(mode="json"))
    explained = store.query("SELECT feature_id FROM explanations WHERE run_id = ?", [grown])
    assert [e["feature_id"] for e in explained] == ["smollm2-135m/mlp.15/1201"]
