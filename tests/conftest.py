"""Shared fixtures: the real subject model loaded once, Prefect's test harness, no internet."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# huggingface_hub reads this once at import: tests never wait on the hub, even for a bad model id
os.environ["HF_HUB_OFFLINE"] = "1"

# `make test` runs the suite in two pytest-xdist workers, one per core: each computes on one thread (two
# workers of two threads each would fight over two cores), and each worker's flows use a Prefect home of
# their own, so two temporary Prefect servers never wait on one SQLite file.
_XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if _XDIST_WORKER:
    os.environ.setdefault("OMP_NUM_THREADS", "1")

from autointerp.pipeline.prefect_env import configure_prefect_defaults, default_prefect_home  # noqa: E402

if _XDIST_WORKER:
    _home = default_prefect_home()
    os.environ.setdefault("PREFECT_HOME", str(_home.with_name(f"{_home.name}-{_XDIST_WORKER}")))
configure_prefect_defaults()

from autointerp.config import RunConfig, load_config  # noqa: E402
from autointerp.subject import SubjectModel, load_subject_model  # noqa: E402

_real_connect = socket.socket.connect


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


# A terminated run (a CI timeout, `kill`) stops like Ctrl-C: pytest tears the session down, so the Prefect
# harness's server process does not outlive it.
signal.signal(signal.SIGTERM, _interrupt)


def _loopback_only(sock: socket.socket, address: Any) -> Any:
    host = address[0] if isinstance(address, tuple) else None
    if host is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            raise RuntimeError(f"test tried to reach {host}: tests talk to loopback only (no cloud APIs)")
    return _real_connect(sock, address)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails any connection to a non-loopback address, so no test calls a cloud API by accident."""
    monkeypatch.setattr(socket.socket, "connect", _loopback_only)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def subject() -> SubjectModel:
    """The real SmolLM2-135M subject model on the CPU, loaded once per session."""
    return load_subject_model("smollm2-135m", "cpu", "float32")


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """A temporary Prefect server and database for the session's flow runs."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield
        # The harness's exit drains Prefect's event and log queues with no time limit, and a queue that holds
        # events for a server already gone (`autointerp run`'s own, the work-pool tests') retries them for
        # many minutes: drain them here for a bounded time, so the harness finds nothing left to drain.
        drain_prefect_queues()


def session_of(config: RunConfig, store: Any, run_id: str) -> Any:
    """Returns the LLM session a flow would open for `run_id` (what the stage functions take)."""
    from autointerp.llm import LLMSession

    return LLMSession.for_run(config.llm, store, run_id)


def tiny_config(tmp_path: Path, *overrides: str) -> RunConfig:
    """Returns a run config small enough for a test: 3 neurons, 48 windows, 1 experiment."""
    return load_config(
        None,
        [
            f"store.path='{tmp_path / 'test.duckdb'}'",
            "features.indices=[5, 400, 1201]",
            "corpus.max_windows=48",
            "corpus.window_tokens=24",
            "collect.top_k=4",
            "collect.random_windows=2",
            "explainer.max_tokens=16",
            "experiments.lowest_n=1",
            "experiments.texts_per_side=1",
            "experiments.proposer.max_tokens=24",
            "experiments.proposer.retries=0",
            # the explainer's answer alone: weighing the top-tokens list loads the simulator in the explain
            # stage (tests/explain/test_best_of.py and the default run's end-to-end test cover it)
            "explainer.top_tokens_candidate=false",
            *overrides,
        ],
    )


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


HEAVIEST_FILES = (
    "tests/distributed/test_work_pool.py",
    "tests/distributed/test_campaign.py",
    "tests/test_hardening_process.py",
    "tests/explaintrain/test_train.py",
    "tests/simtrain/test_train.py",
    "tests/experiments/test_loop.py",
    "tests/benchmarks/test_simulator_benchmark.py",
    "tests/flows/test_flow.py",
    "tests/flows/test_schedule.py",
)
"""Test files that take a minute or more, heaviest first (`--durations` of a full run). They run first, so that
under pytest-xdist (`--dist loadfile --no-loadscope-reorder`) no worker starts one when the other is nearly
done: xdist's own order, by number of tests, sent the one-test simulator benchmark (1.5 minutes) 83rd of 92."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Moves the tests of `HEAVIEST_FILES` to the front, in that order; the rest keep their order."""
    rank = {name: index for index, name in enumerate(HEAVIEST_FILES)}
    root = config.rootpath
    items.sort(key=lambda item: rank.get(item.path.relative_to(root).as_posix(), len(rank)))


_EXIT_STATUS: list[int] = []
DRAIN_S = 15.0
"""Seconds the session waits at its end for Prefect's in-process event and log queues to empty."""


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remembers the session's exit status for `pytest_unconfigure`."""
    _EXIT_STATUS.append(int(exitstatus))


def pytest_unconfigure(config: pytest.Config) -> None:
    """Drains Prefect's event and log queues for a bounded time after the summary is printed, then ends
    the process with the session's exit status.

    Flows run in this process against temporary Prefect servers (the harness, `autointerp run`'s own,
    the work-pool tests'); a queue service already stopped (drained once, so no longer listed) but
    still holding events for a server that has gone retries them one by one at interpreter exit,
    which kept a finished session alive for many minutes. Nothing is left to write at this point:
    the summary is printed, and the temporary servers die with this process (PR_SET_PDEATHSIG)."""
    if not _EXIT_STATUS:
        return
    import sys

    drain_prefect_queues()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_EXIT_STATUS[0])


def drain_prefect_queues() -> None:
    """Stops Prefect's event and log queue services, waiting at most DRAIN_S seconds for each to empty."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for service in (EventsWorker, APILogWorker):
        service.drain_all(timeout=DRAIN_S)
