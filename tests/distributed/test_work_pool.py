"""A sharded run on a real Prefect server and process work pool, all on loopback: `prefect server
start` with a temporary PREFECT_HOME, a process pool, two `prefect worker start` processes, and the
`label_features` flow with distributed.shards=4. One worker is killed (kill -9, with the shard
process it runs) during its shard: the run still completes, equal row for row to the single-process
run. Every server and worker process is stopped by the fixture."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from autointerp.store.database import Store
from tests.distributed.helpers import campaign_config, run_rows

PREFECT = str(Path(sys.executable).parent / "prefect")
ROOT = Path(__file__).resolve().parents[2]
POOL = "autointerp-test"


@dataclass
class WorkPool:
    """A Prefect server and the workers of a process pool, as subprocesses."""

    url: str
    env: dict[str, str]
    logs: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [PREFECT, *args], env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.processes[name] = process
        return process

    def kill(self, name: str) -> None:
        """kill -9 of a process and every process under it (a worker and the shard it runs)."""
        process = self.processes.pop(name)
        try:
            family = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            family = []
        for member in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        psutil.wait_procs(family, timeout=30)

    def stop_all(self) -> None:
        for name in list(self.processes):
            self.kill(name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, process: subprocess.Popen[bytes], timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"prefect server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("prefect server did not become healthy")


@pytest.fixture(scope="module")
def work_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkPool]:
    home = tmp_path_factory.mktemp("prefect-home")
    url = f"http://127.0.0.1:{_free_port()}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_HEARTBEAT_SECONDS": "5",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    pool = WorkPool(url, env, tmp_path_factory.mktemp("logs"))
    try:
        port = url.split(":")[2].split("/")[0]
        server = pool.start("server", "server", "start", "--host", "127.0.0.1", "--port", port)
        _wait_healthy(url, server)
        subprocess.run(
            [PREFECT, "work-pool", "create", POOL, "--type", "process"], env=env, check=True, capture_output=True
        )
        for name in ("worker-1", "worker-2"):
            pool.start(name, "worker", "start", "--pool", POOL, "--name", name, "--limit", "1")
        yield pool
    finally:
        pool.stop_all()


def _running_flow_run(pool: WorkPool, worker: str) -> str | None:
    """Returns the id of a flow run the worker's shard process is running (state Running), if any."""
    process = pool.processes.get(worker)
    if process is None:
        return None
    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return None
    for child in children:
        try:
            flow_run_id = child.environ().get("PREFECT__FLOW_RUN_ID")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if flow_run_id:
            with urllib.request.urlopen(f"{pool.url}/flow_runs/{flow_run_id}", timeout=5) as reply:
                if json.load(reply)["state"]["type"] == "RUNNING":
                    return flow_run_id
    return None


def _kill_first_busy_worker(pool: WorkPool, stop: threading.Event, killed: list[str]) -> None:
    """Kills (-9) the first worker seen running a shard, with the shard's process, during the shard."""
    while not stop.is_set():
        for name in ("worker-1", "worker-2"):
            if _running_flow_run(pool, name):
                time.sleep(2.0)  # into its shard
                pool.kill(name)
                killed.append(name)
                # a replacement machine joins, so the rest of the run is not left to one worker
                pool.start("worker-3", "worker", "start", "--pool", POOL, "--name", "worker-3", "--limit", "1")
                return
        time.sleep(0.5)


@pytest.mark.slow
def test_sharded_run_on_a_work_pool_survives_a_killed_worker_and_equals_the_single_process_run(
    work_pool: WorkPool, tmp_path: Path, explainer_url: str, reference: dict[str, list[Any]]
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from autointerp.flows.label_features import label_features

    config = campaign_config(
        tmp_path,
        explainer_url,
        "distributed.shards=4",
        f"distributed.work_pool='{POOL}'",
        "distributed.heartbeat_timeout_s=10",
        "distributed.start_timeout_s=300",
        "distributed.retries=2",
    )
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_first_busy_worker, args=(work_pool, stop, killed), daemon=True)
    started = time.monotonic()
    with temporary_settings(updates={PREFECT_API_URL: work_pool.url}):
        killer.start()
        try:
            run_id = label_features(config.model_dump(mode="json"))
        finally:
            stop.set()
            killer.join()
        store = Store(config.store.path)
        shards = store.shards(run_id)
        with get_client(sync_client=True) as client:
            states = {s["flow_run_id"]: client.read_flow_run(s["flow_run_id"]).state_type.value for s in shards}
    elapsed = time.monotonic() - started
    assert killed, "no worker was seen running a shard"
    assert store.runs()[0]["status"] == "completed"
    assert run_rows(store, run_id) == reference
    assert {(s["stage"], s["status"]) for s in shards} == {(st, "done") for st in ("collect", "explain", "score")}
    assert len([s for s in shards if s["stage"] == "collect"]) == 4
    assert max(s["attempts"] for s in shards) == 2  # the killed worker's shard, run again
    assert set(states.values()) == {"COMPLETED"}
    print(f"sharded run with a killed worker: {elapsed:.0f} s, {len(shards)} shards")
