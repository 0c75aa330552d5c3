"""The `investigate` flow: experiment rounds on chosen features of an existing run."""

from __future__ import annotations

from typing import Any

from autointerp.pipeline.prefect_env import configure_prefect_defaults

configure_prefect_defaults()

from prefect import flow, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from autointerp.config import RunConfig  # noqa: E402
from autointerp.errors import FeatureError  # noqa: E402
from autointerp.experiments.stage import run_experiments  # noqa: E402
from autointerp.llm import LLMSession  # noqa: E402
from autointerp.prompts import use_prompt_folder  # noqa: E402
from autointerp.store.database import Store  # noqa: E402


@task(name="investigate-feature", cache_policy=NO_CACHE)
def investigate_feature(config_data: dict[str, Any], run_id: str, feature_id: str, session: LLMSession) -> int:
    """Returns 1 once the feature's rounds are done (stored in DuckDB as they finish); raises the
    error that stopped them (the budget, a config error)."""
    config = RunConfig.model_validate(config_data)
    result = run_experiments(config, Store(config.store.path), run_id, session, [feature_id])
    if result.stop_error is not None:
        raise result.stop_error
    return result.done


@flow(name="investigate")
def investigate(config_data: dict[str, Any], run_id: str, feature_ids: list[str]) -> int:
    """Runs experiment-and-revise rounds on `feature_ids` of run `run_id` under the run's LLM session
    (its cache, limits and budget); returns how many features were investigated."""
    config = RunConfig.model_validate(config_data)
    known = {f.id for f in Store(config.store.path).features(run_id)}
    missing = [f for f in feature_ids if f not in known]
    if missing:
        raise FeatureError(f"run {run_id} has no feature {missing[0]!r}; `autointerp show {run_id}` lists them")
    use_prompt_folder(config.llm.prompts)
    session = LLMSession.for_run(config.llm, Store(config.store.path), run_id)
    return sum(investigate_feature(config_data, run_id, feature_id, session) for feature_id in feature_ids)
