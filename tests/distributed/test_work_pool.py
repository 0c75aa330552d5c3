"""A sharded run on a real Prefect server and process work pool, all on loopback: `prefect server
start` with a temporary PREFECT_HOME, a process pool, two `prefect worker start` processes, and the
`label_features` flow with distributed.shards=4. One worker is killed (kill -9, with the shard
process it runs) during its shard: the run still completes, equal row for row to the single-process
run. Every server and worker process is stopped by the fixture.

The server, pool and worker commands are the README's ("Running on many machines"), and a test
checks that the README shows them; `autointerp run` on a misspelt pool, or on a pool without a
worker, must say in one line what to do."""

from __future__ import annotations

import contextlib
import json
import os
import re
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

from autointerp.distributed.shard import QUIET_STAGE
from autointerp.store.database import Store
from tests.distributed.helpers import campaign_config, run_rows, write_toml

PREFECT = str(Path(sys.executable).parent / "prefect")
ROOT = Path(__file__).resolve().parents[2]
POOL = "autointerp-test"
NO_TELEMETRY = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
"""The README's environment for `prefect server start` and the workers: no telemetry."""


def server_command(port: str) -> list[str]:
    return ["server", "start", "--host", "127.0.0.1", "--port", port]


def pool_command(pool: str) -> list[str]:
    return ["work-pool", "create", pool, "--type", "process"]


def worker_command(pool: str) -> list[str]:
    """One shard at a time per worker: without `--limit`, one worker takes every shard of a stage."""
    return ["worker", "start", "--pool", pool, "--limit", "1"]


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
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkPool]:
    """`prefect server start` as the README shows it, with no pool and no worker yet."""
    home = tmp_path_factory.mktemp("prefect-home")
    url = f"http://127.0.0.1:{_free_port()}/api"
    env = {
        **os.environ,
        **NO_TELEMETRY,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": url,
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
        server = pool.start("server", *server_command(port))
        _wait_healthy(url, server)
        yield pool
    finally:
        pool.stop_all()


@pytest.fixture(scope="module")
def work_pool(prefect_server: WorkPool) -> WorkPool:
    """The server with a process pool and two workers, as the README creates them."""
    subprocess.run([PREFECT, *pool_command(POOL)], env=prefect_server.env, check=True, capture_output=True)
    for name in ("worker-1", "worker-2"):
        prefect_server.start(name, *worker_command(POOL), "--name", name)
    return prefect_server


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
                pool.start("worker-3", *worker_command(POOL), "--name", "worker-3")
                return
        time.sleep(0.5)


def test_the_readme_shows_the_commands_these_tests_run() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Running on many machines", 1)[1].split("\n## ", 1)[0]
    shown = section.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in shown.splitlines()]
    exports = " ".join(c for c in commands if c.startswith("export "))
    for key, value in NO_TELEMETRY.items():
        assert f"{key}={value}" in exports, key
    assert "PREFECT_API_URL=http://" in exports
    assert f"prefect {' '.join(server_command('4200'))}" in commands
    assert f"prefect {' '.join(pool_command('autointerp'))}" in commands
    assert f"prefect {' '.join(worker_command('autointerp'))}" in commands


def _run_cli(server: WorkPool, tmp_path: Path, explainer_url: str, *overrides: str) -> tuple[int, list[str], float]:
    """`autointerp run` in this process against the server; returns (exit code, output lines, seconds)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from typer.testing import CliRunner

    from autointerp.cli.app import app

    config = write_toml(campaign_config(tmp_path, explainer_url, *overrides), tmp_path / "campaign.toml")
    started = time.monotonic()
    with temporary_settings(updates={PREFECT_API_URL: server.url}):
        result = CliRunner().invoke(app, ["run", "-c", str(config)])
    return result.exit_code, result.output.splitlines(), time.monotonic() - started


@pytest.mark.slow
def test_a_misspelt_work_pool_is_one_line_with_the_command_that_creates_it(
    prefect_server: WorkPool, tmp_path: Path, explainer_url: str
) -> None:
    code, lines, _ = _run_cli(prefect_server, tmp_path, explainer_url, "distributed.work_pool='autointerp-tset'")
    assert code == 1
    assert not any("Traceback" in line for line in lines), "\n".join(lines)
    errors = [line for line in lines if line.startswith("error:")]
    assert errors == [
        f"error: no Prefect work pool 'autointerp-tset' on {prefect_server.url} (check distributed.work_pool): "
        "create it with `prefect work-pool create autointerp-tset --type process` and start a worker on each "
        "machine with `prefect worker start --pool autointerp-tset --limit 1`"
    ]


@pytest.mark.slow
def test_a_work_pool_without_a_worker_stops_in_bounded_time_with_the_command_that_starts_one(
    prefect_server: WorkPool, tmp_path: Path, explainer_url: str
) -> None:
    pool = "autointerp-idle"
    subprocess.run([PREFECT, *pool_command(pool)], env=prefect_server.env, check=True, capture_output=True)
    code, lines, seconds = _run_cli(
        prefect_server, tmp_path, explainer_url, f"distributed.work_pool='{pool}'", "distributed.shards=2",
        "distributed.start_timeout_s=3",
    )  # fmt: skip
    assert code == 1
    assert seconds < 120
    assert not any("Traceback" in line for line in lines), "\n".join(lines)
    assert (  # said at once, before the wait
        "shards run as autointerp-shard/autointerp-shard on work pool 'autointerp-idle', which has no worker "
        "online yet: start one on each machine with `prefect worker start --pool autointerp-idle --limit 1`"
    ) in lines
    assert "collect: 2 of 2 shards on work pool 'autointerp-idle'" in lines
    errors = [line for line in lines if line.startswith("error:")]
    assert errors == [
        "error: collect: 2 shards waited 3 s and no worker of Prefect work pool 'autointerp-idle' is online: "
        "start one on each machine with `prefect worker start --pool autointerp-idle --limit 1`, "
        "then rerun the same command"
    ]
    assert not any("Deployments" in line or "applied" in line for line in lines)  # Prefect's table stays hidden


@pytest.mark.slow
def test_sharded_run_on_a_work_pool_survives_a_killed_worker_and_equals_the_single_process_run(
    work_pool: WorkPool,
    tmp_path: Path,
    explainer_url: str,
    reference: dict[str, list[Any]],
    capsys: pytest.CaptureFixture[str],
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
    stop, killed = threading.Event(), list[str]()
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
            states = {
                s["flow_run_id"]: state.value if (state := client.read_flow_run(s["flow_run_id"]).state_type) else None
                for s in shards
            }
    elapsed = time.monotonic() - started
    assert killed, "no worker was seen running a shard"
    assert store.runs()[0]["status"] == "completed"
    assert run_rows(store, run_id) == reference
    stages = ("collect", QUIET_STAGE, "explain", "score")  # a neuron short of quiet windows: the second round
    assert {(s["stage"], s["status"]) for s in shards} == {(st, "done") for st in stages}
    assert len([s for s in shards if s["stage"] == "collect"]) == len([s for s in shards if s["stage"] == QUIET_STAGE])
    assert len([s for s in shards if s["stage"] == "collect"]) == 4
    assert max(s["attempts"] for s in shards) == 2  # the killed worker's shard, run again
    assert set(states.values()) == {"COMPLETED"}
    said = capsys.readouterr().err.splitlines()  # the parent announced the lost shard and its restart
    assert any(
        re.fullmatch(r"\w+: shard \d/\d crashed \(heartbeat lost\), restarting \(attempt 2\)", line) for line in said
    )
    assert any(re.fullmatch(r"\w+: shard \d/\d done \(\d of \d shards finished\)", line) for line in said)
    print(f"sharded run with a killed worker: {elapsed:.0f} s, {len(shards)} shards")
