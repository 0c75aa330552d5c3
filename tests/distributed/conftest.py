"""Fixtures of the distributed tests: one deterministic explainer server and the single-process run."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from autointerp.config import RunConfig
from autointerp.store.database import Store
from tests.conftest import session_of
from tests.distributed.helpers import LoopbackServer, campaign_config, echo_marked, run_rows


@pytest.fixture(scope="session")
def explainer_url() -> Iterator[str]:
    """One loopback explainer for the session: its URL is part of the config, so of the run id."""
    with LoopbackServer([], respond=echo_marked) as server:
        yield server.url


def single_process_run(config: RunConfig) -> tuple[Store, str]:
    """The run as `label_features` does it in one process (its stage functions, without Prefect)."""
    from autointerp.collect.stage import run_collect
    from autointerp.experiments.stage import run_experiments
    from autointerp.explain.stage import run_explain
    from autointerp.neighbours.stage import run_neighbours
    from autointerp.score.stage import run_score

    store = Store(config.store.path)
    store.migrate()
    run_id = config.resolved_run_id()
    store.start_run(run_id, config.model_dump(mode="json"), config.config_hash(), "test", None)
    run_collect(config, store, run_id)
    run_neighbours(config, store, run_id)
    session = session_of(config, store, run_id)
    for stage in (run_explain, run_score, run_experiments):
        stage(config, store, run_id, session)
    return store, run_id


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory, explainer_url: str) -> dict[str, list[Any]]:
    """The single-process run's rows (ids and timestamps left out)."""
    store, run_id = single_process_run(campaign_config(tmp_path_factory.mktemp("single"), explainer_url))
    return run_rows(store, run_id)
