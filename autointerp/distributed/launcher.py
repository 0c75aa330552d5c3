"""The seam between a sharded run's parent and Prefect: `Launcher` (start, watch, crash and cancel a
shard's flow run; count the pool's workers online) and `PrefectLauncher`, which does it on a work
pool after checking that the pool exists on a running server (one line saying what to do when not).
The tests of the retry logic swap in an in-process launcher."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from pathlib import Path
from typing import Any, Protocol

from autointerp.config import DistributedConfig
from autointerp.errors import AutointerpError, ConfigError


class NoWorkers(AutointerpError):
    """No worker of the work pool picked up a shard in time (none is online); the run is resumable."""


class _ToStderr(logging.Handler):
    """Writes a record's message as one plain line on the stderr of the moment (not the one at import)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(f"{self.format(record)}\n")
            sys.stderr.flush()
        except Exception:  # a closed stream must not stop the run
            self.handleError(record)


progress_log = logging.getLogger("autointerp.distributed.progress")
"""The parent's progress lines (`collect: shard 2/4 done`), shown on stderr whatever the log level of
the command (a run's own log lines are WARNING and up)."""
if not progress_log.handlers:
    progress_log.addHandler(_ToStderr())
    progress_log.setLevel(logging.INFO)
    progress_log.propagate = False


class Launcher(Protocol):
    """Starts shard flow runs and reads their states (Prefect's work pool, or a stand-in in tests)."""

    def start(self, name: str, parameters: dict[str, Any]) -> str:
        """Starts a shard flow run; returns its id."""
        ...

    def state(self, flow_run_id: str) -> tuple[str, str]:
        """Returns (state type, e.g. RUNNING or CRASHED; its message)."""
        ...

    def crash(self, flow_run_id: str, message: str) -> None:
        """Marks a flow run whose worker is gone as Crashed."""
        ...

    def cancel(self, flow_run_id: str, message: str) -> None:
        """Cancels a flow run that no worker picked up (so none picks it up later)."""
        ...

    def workers_online(self) -> int | None:
        """Returns how many workers of the pool are online (None: the launcher cannot tell)."""
        ...


class PrefectLauncher:
    """Deploys the shard flow to the work pool once, then runs shards with `run_deployment`.

    Checks first what a user can get wrong, each as one line saying what to do: no PREFECT_API_URL
    (a temporary server has no work pool and no workers), a work pool that does not exist."""

    def __init__(self, settings: DistributedConfig) -> None:
        from autointerp.distributed.shard import run_shard

        pool = settings.work_pool
        assert pool is not None
        self.pool = pool
        api_url = _check_work_pool(pool)
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # Prefect prints a table of deployments
                if settings.image:
                    run_shard.deploy(
                        name=settings.deployment, work_pool_name=pool, image=settings.image, build=False,
                        push=False, print_next_steps=False, ignore_warnings=True,
                    )  # fmt: skip
                else:
                    import autointerp

                    source = settings.source or str(Path(autointerp.__file__).resolve().parent.parent)
                    remote = run_shard.from_source(
                        source=source, entrypoint="autointerp/distributed/shard.py:run_shard"
                    )
                    remote.deploy(  # type: ignore[union-attr]
                        name=settings.deployment, work_pool_name=pool, print_next_steps=False, ignore_warnings=True
                    )
        except ValueError as exc:  # Prefect 3 raises ValueError for a missing pool (deleted since the check)
            if "work pool" not in str(exc):
                raise
            raise ConfigError(_no_pool_message(pool, api_url)) from None
        self.deployment = f"autointerp-shard/{settings.deployment}"
        online = self.workers_online()
        if online == 0:
            progress_log.info(
                "shards run as %s on work pool %r, which has no worker online yet: start one on each machine "
                "with `prefect worker start --pool %s --limit 1`", self.deployment, pool, pool,
            )  # fmt: skip
        else:
            workers = "" if online is None else f" ({online} worker{'s' if online != 1 else ''} online)"
            progress_log.info("shards run as %s on work pool %r%s", self.deployment, pool, workers)

    def start(self, name: str, parameters: dict[str, Any]) -> str:
        from prefect.deployments import run_deployment

        flow_run = run_deployment(self.deployment, parameters=parameters, timeout=0, flow_run_name=name)
        return str(flow_run.id)  # type: ignore[union-attr]

    def state(self, flow_run_id: str) -> tuple[str, str]:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            state = client.read_flow_run(flow_run_id).state  # type: ignore[arg-type]
        if state is None:
            return "SCHEDULED", ""
        return state.type.value, state.message or ""

    def crash(self, flow_run_id: str, message: str) -> None:
        from prefect.client.orchestration import get_client
        from prefect.states import Crashed

        with get_client(sync_client=True) as client:
            client.set_flow_run_state(flow_run_id, Crashed(message=message), force=True)  # type: ignore[arg-type]

    def cancel(self, flow_run_id: str, message: str) -> None:
        from prefect.client.orchestration import get_client
        from prefect.states import Cancelled

        with get_client(sync_client=True) as client:
            client.set_flow_run_state(flow_run_id, Cancelled(message=message), force=True)  # type: ignore[arg-type]

    def workers_online(self) -> int | None:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import WorkerFilter, WorkerFilterStatus

        with get_client(sync_client=True) as client:
            work_pool = client.read_work_pool(self.pool)
            if work_pool.is_push_pool or work_pool.is_managed_pool:
                return None  # no workers of ours: the pool's service runs the flow runs
            online = WorkerFilter(status=WorkerFilterStatus(any_=["ONLINE"]))
            return len(client.read_workers_for_work_pool(self.pool, worker_filter=online))


def _no_pool_message(pool: str, api_url: str) -> str:
    return (
        f"no Prefect work pool {pool!r} on {api_url} (check distributed.work_pool): create it with "
        f"`prefect work-pool create {pool} --type process` and start a worker on each machine with "
        f"`prefect worker start --pool {pool} --limit 1`"
    )


def _check_work_pool(pool: str) -> str:
    """Returns the Prefect API URL once the work pool is found there; raises ConfigError, one line,
    when PREFECT_API_URL is not set (Prefect's temporary server has no pools and no workers) or the
    pool does not exist."""
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL

    api_url = os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value()
    if not api_url:
        raise ConfigError(
            f"distributed.work_pool={pool!r} needs a running Prefect server that the workers share, and "
            "PREFECT_API_URL is not set: start one with `prefect server start`, then "
            "`export PREFECT_API_URL=http://127.0.0.1:4200/api` (its address) here and on every worker's machine"
        )
    try:
        with get_client(sync_client=True) as client:
            client.read_work_pool(pool)
    except ObjectNotFound:
        raise ConfigError(_no_pool_message(pool, api_url)) from None
    except httpx.HTTPError as exc:
        raise ConfigError(f"cannot read work pool {pool!r} from the Prefect server at {api_url}: {exc}") from None
    return str(api_url)
