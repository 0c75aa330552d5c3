"""The `label_features` flow: collect -> explain -> score -> experiment, logged to DuckDB.

The stages are plain functions (`run_collect` in `autointerp.collect.stage`, and so on); this module
adds Prefect tasks around them, brings the review app's list index up to date at the end, and owns the
run's LLM session (cache, limits, prices, budget), handed to every stage. Works with no Prefect server
running (Prefect starts a temporary one).

A run is `completed` only when every stage finished every live feature. A stage that left features
undone (failed calls, the budget) makes it `incomplete`, one that did nothing of what it had to do
makes it `failed`; either way the flow raises `RunIncomplete` after storing the status, and
rerunning the same config resumes the work left.
"""

from __future__ import annotations

from typing import Any

from autointerp.pipeline.prefect_env import configure_prefect_defaults

configure_prefect_defaults()

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402
from prefect.runtime import flow_run  # noqa: E402

from autointerp import __version__  # noqa: E402
from autointerp.collect.stage import run_collect  # noqa: E402
from autointerp.config import RunConfig  # noqa: E402
from autointerp.errors import RunIncomplete  # noqa: E402
from autointerp.experiments.stage import run_experiments  # noqa: E402
from autointerp.explain.stage import run_explain  # noqa: E402
from autointerp.llm import LLMSession  # noqa: E402
from autointerp.neighbours.stage import run_neighbours  # noqa: E402
from autointerp.outputs.stage import run_outputs  # noqa: E402
from autointerp.pipeline.pool import StageResult  # noqa: E402
from autointerp.pipeline.resume import check_resumable  # noqa: E402
from autointerp.prompts import use_prompt_folder  # noqa: E402
from autointerp.score.stage import run_score  # noqa: E402
from autointerp.store.database import Store  # noqa: E402
from autointerp.store.run_lock import run_lock  # noqa: E402


def _config(data: dict[str, Any]) -> RunConfig:
    return RunConfig.model_validate(data)


@task(name="collect", cache_policy=NO_CACHE)
def collect(config_data: dict[str, Any], run_id: str) -> int:
    """Returns the number of features collected."""
    config = _config(config_data)
    return run_collect(config, Store(config.store.path), run_id)


@task(name="neighbours", cache_policy=NO_CACHE)
def neighbours(config_data: dict[str, Any], run_id: str) -> int:
    """Returns the number of cosine neighbour rows written (0: off, already stored, or none to find)."""
    config = _config(config_data)
    return run_neighbours(config, Store(config.store.path), run_id)


@task(name="outputs", cache_policy=NO_CACHE)
def outputs(config_data: dict[str, Any], run_id: str) -> StageResult:
    """Returns the outputs stage's tallies (output evidence stored per live feature)."""
    config = _config(config_data)
    return run_outputs(config, Store(config.store.path), run_id)


@task(name="explain", cache_policy=NO_CACHE)
def explain(config_data: dict[str, Any], run_id: str, session: LLMSession) -> StageResult:
    """Returns the explain stage's tallies."""
    config = _config(config_data)
    return run_explain(config, Store(config.store.path), run_id, session)


@task(name="score", cache_policy=NO_CACHE)
def score(config_data: dict[str, Any], run_id: str, session: LLMSession) -> StageResult:
    """Returns the score stage's tallies (one item per explanation)."""
    config = _config(config_data)
    return run_score(config, Store(config.store.path), run_id, session)


@task(name="experiment", cache_policy=NO_CACHE)
def experiment(config_data: dict[str, Any], run_id: str, session: LLMSession) -> StageResult:
    """Returns the experiment stage's tallies."""
    config = _config(config_data)
    return run_experiments(config, Store(config.store.path), run_id, session)


@task(name="review index", cache_policy=NO_CACHE)
def review_index(config_data: dict[str, Any]) -> bool:
    """Brings the review app's feature list index up to date with what the run wrote, so that `autointerp
    review` opens at once; returns whether it is current. A failure is logged, never the run's."""
    from autointerp.review.queries import refresh_index

    why = refresh_index(Store(_config(config_data).store.path))
    if why is not None:
        get_run_logger().warning(why)
    return why is None


def run_status(results: list[StageResult]) -> tuple[str, str | None]:
    """Returns (status, message) of a run from its stages' tallies: `completed` when every stage
    finished every feature, `failed` when a stage did none of its work, `incomplete` otherwise."""
    unfinished = [r for r in results if not r.complete]
    if not unfinished:
        return "completed", None
    nothing = any(r.done == 0 and r.total > 0 and not r.skipped for r in unfinished)
    message = "; ".join(r.summary() for r in unfinished)
    return ("failed" if nothing else "incomplete"), f"{message}. Rerun the same command to resume"


@flow(name="label_features")
def label_features(config_data: dict[str, Any]) -> str:
    """Runs the whole loop for one config; returns the run id. Rerunning a config resumes its run.

    Raises RunIncomplete (after storing the run's status) when a stage left live features undone.
    """
    config = _config(config_data)
    run_id = config.resolved_run_id()
    with run_lock(config.store.path, run_id):  # a second process on the same run is refused, not run twice
        return _label(config_data, config, run_id)


def _label(config_data: dict[str, Any], config: RunConfig, run_id: str) -> str:
    """`label_features`'s body, run while this process holds the run's lock."""
    store = Store(config.store.path)
    store.migrate()
    changed = check_resumable(store, config)
    if changed:  # `autointerp run` printed it already, in its preflight: here only in the run's log
        get_run_logger().info(changed)
    store.start_run(run_id, config.model_dump(mode="json"), config.config_hash(), __version__, flow_run.get_id())
    results: list[StageResult] = []
    try:
        if config.distributed.work_pool is not None:  # shards on a work pool's workers
            from autointerp.distributed.campaign import run_campaign

            results = run_campaign(config, store, run_id)
        else:
            collect(config_data, run_id)
            neighbours(config_data, run_id)
            results.append(outputs(config_data, run_id))
            use_prompt_folder(config.llm.prompts)
            session = LLMSession.for_run(config.llm, store, run_id)
            for stage in (explain, score, experiment):
                result = stage(config_data, run_id, session)
                results.append(result)
                if result.stop_error is not None:  # the budget or a config error: later stages would stop too
                    break
    except BaseException as exc:
        store.finish_run(run_id, "failed", f"{type(exc).__name__}: {exc}")
        raise
    status, message = run_status(results)
    store.finish_run(run_id, status, message)
    review_index(config_data)
    if message is not None:
        raise RunIncomplete(run_id, status, message)
    return run_id
