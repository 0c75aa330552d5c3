"""The `label_features` flow: collect -> explain -> score -> experiment, logged to DuckDB.

The stages are plain functions in `autointerp.pipeline`; this module adds Prefect tasks
around them. Works with no Prefect server running (Prefect starts a temporary one).
"""

from __future__ import annotations

from typing import Any

from autointerp.prefect_env import configure_prefect_defaults

configure_prefect_defaults()

from prefect import flow, task  # noqa: E402
from prefect.runtime import flow_run  # noqa: E402

from autointerp import __version__, pipeline  # noqa: E402
from autointerp.config import RunConfig  # noqa: E402
from autointerp.store import Store  # noqa: E402


def _config(data: dict[str, Any]) -> RunConfig:
    return RunConfig.model_validate(data)


@task(name="collect")
def collect(config_data: dict[str, Any], run_id: str) -> int:
    """Returns the number of features collected."""
    config = _config(config_data)
    return pipeline.run_collect(config, Store(config.store.path), run_id)


@task(name="explain")
def explain(config_data: dict[str, Any], run_id: str) -> int:
    """Returns the number of explanations written."""
    config = _config(config_data)
    return pipeline.run_explain(config, Store(config.store.path), run_id)


@task(name="score")
def score(config_data: dict[str, Any], run_id: str) -> int:
    """Returns the number of explanations scored."""
    config = _config(config_data)
    return pipeline.run_score(config, Store(config.store.path), run_id)


@task(name="experiment")
def experiment(config_data: dict[str, Any], run_id: str) -> int:
    """Returns the number of experiments run."""
    config = _config(config_data)
    return pipeline.run_experiments(config, Store(config.store.path), run_id)


@flow(name="label_features")
def label_features(config_data: dict[str, Any]) -> str:
    """Runs the whole loop for one config; returns the run id. Rerunning a config resumes its run."""
    config = _config(config_data)
    store = Store(config.store.path)
    store.migrate()
    run_id = config.resolved_run_id()
    store.start_run(run_id, config.model_dump(mode="json"), config.config_hash(), __version__, flow_run.get_id())
    try:
        collect(config_data, run_id)
        explain(config_data, run_id)
        score(config_data, run_id)
        experiment(config_data, run_id)
    except BaseException as exc:
        store.finish_run(run_id, "failed", f"{type(exc).__name__}: {exc}")
        raise
    store.finish_run(run_id, "completed")
    return run_id
