"""Many machines without surprises: what a user who gets the set-up wrong sees (one line saying what to
do), and parts that two stores of one config, or two parents of one run, cannot mix up. The launchers
here stand in for a work pool whose shards nobody picks up; no Prefect server is started."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from autointerp.cli.app import error_line
from autointerp.distributed.campaign import Campaign, NoWorkers, ShardsFailed, run_campaign
from autointerp.distributed.parts import store_folder
from autointerp.errors import ConfigError
from autointerp.store.database import Store
from tests.distributed.helpers import campaign_config, run_rows
from tests.distributed.test_campaign import ThreadLauncher, sharded_run


class IdleLauncher:
    """A work pool whose flow runs stay Scheduled: `online` workers are online (0: none; otherwise all
    busy elsewhere). With `fail_after_s`, a flow run reports Failed after that long."""

    def __init__(self, online: int | None, fail_after_s: float | None = None) -> None:
        self.online, self.fail_after_s = online, fail_after_s
        self.started: dict[str, float] = {}
        self.cancelled: list[str] = []

    def start(self, name: str, parameters: dict[str, Any]) -> str:
        flow_run_id = str(uuid.uuid4())
        self.started[flow_run_id] = time.monotonic()
        return flow_run_id

    def state(self, flow_run_id: str) -> tuple[str, str]:
        if flow_run_id in self.cancelled:
            return "CANCELLED", ""
        waited = time.monotonic() - self.started[flow_run_id]
        if self.fail_after_s is not None and waited > self.fail_after_s:
            return "FAILED", "never ran"
        return "SCHEDULED", ""

    def crash(self, flow_run_id: str, message: str) -> None:
        raise AssertionError("a Scheduled flow run is never crashed")

    def cancel(self, flow_run_id: str, message: str) -> None:
        self.cancelled.append(flow_run_id)

    def workers_online(self) -> int | None:
        return self.online


def _campaign(tmp_path: Path, launcher: Any, *overrides: str) -> tuple[Campaign, Store]:
    config = campaign_config(tmp_path, "http://127.0.0.1:1", "distributed.shards=4", *overrides)
    store = Store(config.store.path)
    store.migrate()
    campaign = Campaign(config, store, config.resolved_run_id(), launcher)
    campaign.poll_s = 0.05
    return campaign, store


def test_a_run_without_prefect_api_url_says_a_work_pool_needs_a_running_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    config = campaign_config(tmp_path, "http://127.0.0.1:1", "distributed.work_pool='autointerp'")
    with temporary_settings(restore_defaults={PREFECT_API_URL}), pytest.raises(ConfigError) as raised:
        run_campaign(config, Store(config.store.path), config.resolved_run_id())
    line = error_line(raised.value)
    assert "\n" not in line
    assert "PREFECT_API_URL is not set" in line
    assert "`prefect server start`" in line and "`export PREFECT_API_URL=http://127.0.0.1:4200/api`" in line


def test_a_pool_with_no_worker_online_stops_the_run_naming_the_pool_and_the_worker_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    launcher = IdleLauncher(online=0)
    campaign, store = _campaign(
        tmp_path, launcher, "distributed.work_pool='gpu-pool'", "distributed.start_timeout_s=0.5"
    )
    started = time.monotonic()
    with pytest.raises(NoWorkers) as raised:
        campaign.run()  # collection shards: nobody picks them up
    assert time.monotonic() - started < 10
    line = error_line(raised.value)
    assert line == (
        "error: collect: 4 shards waited 0.5 s and no worker of Prefect work pool 'gpu-pool' is online: "
        "start one on each machine with `prefect worker start --pool gpu-pool --limit 1`, then rerun the same command"
    )
    assert sorted(launcher.cancelled) == sorted(launcher.started)  # no worker started later runs them
    shards = store.shards(campaign.run_id)
    assert [s["status"] for s in shards] == ["pending"] * 4
    assert store.shard_progress()[campaign.run_id] == {"pending": 4, "restarts": 0}
    assert "collect: 4 of 4 shards on work pool 'gpu-pool'" in capsys.readouterr().err.splitlines()


def test_shards_waiting_for_busy_workers_are_announced_and_not_stopped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    launcher = IdleLauncher(online=2, fail_after_s=1.0)
    campaign, _ = _campaign(
        tmp_path, launcher, "distributed.work_pool='busy'", "distributed.start_timeout_s=0.3", "distributed.retries=0"
    )
    with pytest.raises(ShardsFailed, match="never ran"):
        campaign.run()
    said = capsys.readouterr().err.splitlines()
    assert "collect: 4 shards waiting for a worker of pool 'busy' (2 online, busy)" in said
    assert "collect: shard 1/4 failed (never ran), no attempts left" in said


def test_two_stores_of_one_config_keep_their_parts_apart(
    tmp_path: Path, explainer_url: str, reference: dict[str, list[Any]]
) -> None:
    shared = tmp_path / "parts"

    def config(name: str) -> Any:
        return campaign_config(
            tmp_path, explainer_url, "distributed.shards=2", "distributed.work_pool='threads'",
            f"store.path='{tmp_path / name}'", f"distributed.results_dir='{shared}'",
        )  # fmt: skip

    first, second = config("a.duckdb"), config("b.duckdb")
    assert first.resolved_run_id() == second.resolved_run_id()  # the store path is not part of the run id
    store_a, run_id, campaign_a = sharded_run(first, ThreadLauncher())

    def parts(campaign: Campaign) -> dict[str, str]:
        """Result file -> its part id, for every attempt folder of the run."""
        fs = campaign.folder.fs
        found = fs.glob(campaign.folder.path("*/shard-*/try-*/result.json"))
        return {path: json.loads(fs.cat_file(path))["part_id"] for path in found}

    before = parts(campaign_a)
    assert before
    store_b, _, campaign_b = sharded_run(second, ThreadLauncher())
    assert campaign_a.folder.root != campaign_b.folder.root
    assert parts(campaign_a) == before  # the second store's shards wrote none of the first's files
    assert set(parts(campaign_b)).isdisjoint(before)
    assert run_rows(store_a, run_id) == run_rows(store_b, run_id) == reference


def test_a_store_folder_is_named_for_its_file_and_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    here = store_folder("/shared/parts", "runs/campaign.duckdb")
    assert here == store_folder("/shared/parts", tmp_path / "runs" / "campaign.duckdb")  # one file, one folder
    assert here.startswith("/shared/parts/campaign-")
    assert store_folder("/shared/parts", tmp_path / "other" / "campaign.duckdb") != here
    assert store_folder("s3://bucket/autointerp", "runs/campaign.duckdb").startswith("s3://bucket/autointerp/campaign-")


def test_two_parents_of_one_run_never_claim_the_same_attempt(tmp_path: Path) -> None:
    store = Store(tmp_path / "ledger.duckdb")
    store.migrate()
    claims = [store.claim_attempt("run", "score", 0, 2) for _ in range(3)]
    assert claims == [1, 2, 3]  # each attempt, so each attempt folder, belongs to one parent
    assert store.claim_attempt("run", "score", 1, 2, at_least=4) == 4
    assert store.shard_progress()["run"] == {"running": 2, "restarts": 5}
