"""The parent's shard logic with shards run in threads of this process (no Prefect server): equality
with a single-process run, retries of failed and lost shards, a run that fails and resumes, parts
ingested once."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from autointerp.config import RunConfig
from autointerp.distributed.campaign import Campaign, ShardsFailed, collection_shards, feature_shards
from autointerp.distributed.parts import results_dir
from autointerp.distributed.shard import COLLECT_STAGES, QUIET_STAGE, run_shard
from autointerp.store.database import Store
from tests.distributed.helpers import assert_same_rows, campaign_config, run_rows

Fault = tuple[str, int, int]  # (stage, shard, attempt)


class ThreadLauncher:
    """Runs each shard flow's function in a thread. `lost` attempts never start and never beat (a killed
    worker); `failing` attempts raise. Collection shards take turns, as on workers of one slot each; the
    LLM stages' shards run at once and share this process's subject model (experiments run it)."""

    def __init__(self, lost: set[Fault] = frozenset(), failing: set[Fault] = frozenset()) -> None:  # type: ignore[assignment]
        self.lost, self.failing = lost, failing
        self.runs: dict[str, dict[str, Any]] = {}
        self.crashed: list[str] = []
        self.model_lock = threading.Lock()

    def start(self, name: str, parameters: dict[str, Any]) -> str:
        run_id = str(uuid.uuid4())
        attempt = (parameters["stage"], parameters["shard"], parameters["attempt"])
        # collection shards wait for the model like a worker starting a process: Pending, no heartbeat
        collecting = parameters["stage"] in COLLECT_STAGES
        first = "PENDING" if collecting and attempt not in self.lost else "RUNNING"
        run: dict[str, Any] = {"state": first, "message": "", "name": name}
        self.runs[run_id] = run
        if attempt in self.lost:
            return run_id

        def work() -> None:
            try:
                if attempt in self.failing:
                    raise RuntimeError("injected failure")
                if collecting:
                    with self.model_lock:
                        run["state"] = "RUNNING"
                        run_shard.fn(**parameters)
                else:
                    run_shard.fn(**parameters)
                run["state"] = "COMPLETED"
            except Exception as exc:
                run["state"], run["message"] = "FAILED", f"{type(exc).__name__}: {exc}"

        threading.Thread(target=work, daemon=True).start()
        return run_id

    def state(self, flow_run_id: str) -> tuple[str, str]:
        run = self.runs[flow_run_id]
        return run["state"], run["message"]

    def crash(self, flow_run_id: str, message: str) -> None:
        self.runs[flow_run_id].update(state="CRASHED", message=message)
        self.crashed.append(flow_run_id)

    def cancel(self, flow_run_id: str, message: str) -> None:
        self.runs[flow_run_id].update(state="CANCELLED", message=message)

    def workers_online(self) -> int | None:
        return 2


def sharded_run(
    config: RunConfig, launcher: ThreadLauncher, *, expect_complete: bool = False
) -> tuple[Store, str, Campaign]:
    """Runs the campaign; with `expect_complete`, asserts that no stage left a feature failed or unreached (a
    feature that failed in a shard leaves no rows, which would otherwise show only as a table that differs)."""
    store = Store(config.store.path)
    store.migrate()
    run_id = config.resolved_run_id()
    store.start_run(run_id, config.model_dump(mode="json"), config.config_hash(), "test", None)
    campaign = Campaign(config, store, run_id, launcher)
    campaign.poll_s = 0.05
    stages = campaign.run()
    if expect_complete:
        assert all(stage.complete for stage in stages), [stage.summary() for stage in stages]
    return store, run_id, campaign


def test_shard_plans_cover_everything_once() -> None:
    config = campaign_config(Path("/tmp"), "http://127.0.0.1:1", "corpus.max_windows=50")
    ranges = [s["window_range"] for s in collection_shards(config, 4)]
    assert ranges == [[0, 16], [16, 32], [32, 48], [48, 50]]  # 7 batches of 8 (the last short): 2, 2, 2, 1
    assert [len(s["feature_ids"]) for s in feature_shards([str(i) for i in range(10)], 4)] == [3, 3, 2, 2]
    assert len(feature_shards(["a", "b"], 4)) == 2 and feature_shards([], 4) == []


def test_sharded_run_equals_the_single_process_run_despite_failed_and_lost_shards(
    tmp_path: Path, explainer_url: str, reference: dict[str, list[Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    config = campaign_config(
        tmp_path, explainer_url, "distributed.shards=4", "distributed.work_pool='threads'",
        "distributed.heartbeat_timeout_s=5.0",
    )  # fmt: skip
    launcher = ThreadLauncher(lost={("collect", 1, 1), ("score", 0, 1)}, failing={("explain", 2, 1)})
    store, run_id, _ = sharded_run(config, launcher)
    rows = run_rows(store, run_id)
    assert rows["features"] and rows["exemplars"] and rows["explanations"] and rows["scores"]
    for table, expected in reference.items():
        assert rows[table] == expected, table
    assert len(launcher.crashed) == 2  # the lost attempts were marked Crashed, then retried
    shards = store.shards(run_id)
    stages = ("collect", QUIET_STAGE, "explain", "score")  # a neuron short of quiet windows: the second round
    assert {(s["stage"], s["status"]) for s in shards} == {(st, "done") for st in stages}
    attempts = {(s["stage"], s["shard"]): s["attempts"] for s in shards}
    assert attempts[("collect", 1)] == attempts[("score", 0)] == attempts[("explain", 2)] == 2
    assert sum(attempts.values()) == len(shards) + 3
    # the parent says what happens to its shards as it happens, one plain line each
    said = capsys.readouterr().err.splitlines()
    assert "collect: 4 of 4 shards on work pool 'threads'" in said
    assert "collect: shard 2/4 crashed (heartbeat lost), restarting (attempt 2)" in said
    assert "explain: shard 3/3 failed (RuntimeError: injected failure), restarting (attempt 2)" in said
    assert "score: shard 1/3 crashed (heartbeat lost), restarting (attempt 2)" in said
    assert "score: shard 1/3 done (3 of 3 shards finished)" in said
    assert any(line.startswith("explain: 3 shards done in ") for line in said)
    assert not any("Traceback" in line or line.startswith("WARNING") for line in said)


def test_a_shard_failing_for_good_fails_the_run_and_a_rerun_redoes_only_unfinished_shards(
    tmp_path: Path, explainer_url: str, reference: dict[str, list[Any]]
) -> None:
    config = campaign_config(
        tmp_path, explainer_url, "distributed.shards=3", "distributed.work_pool='threads'", "distributed.retries=1"
    )
    broken = ThreadLauncher(failing={("explain", 1, 1), ("explain", 1, 2)})
    with pytest.raises(ShardsFailed, match=r"explain shard 2 of 3 failed 2 times .*injected failure.*Rerun"):
        sharded_run(config, broken)
    store = Store(config.store.path)
    run_id = config.resolved_run_id()
    statuses = {(s["stage"], s["shard"]): s["status"] for s in store.shards(run_id)}
    assert statuses[("explain", 1)] == "failed" and statuses[("explain", 0)] == "done"

    healthy = ThreadLauncher()
    sharded_run(config, healthy)
    started = sorted(r["name"].split(f"{run_id}-")[1] for r in healthy.runs.values())
    assert started == ["explain-2of3-try3", "score-1of3-try1", "score-2of3-try1", "score-3of3-try1"]
    assert run_rows(store, run_id) == reference


def test_ingesting_the_same_parts_twice_adds_no_rows(tmp_path: Path, explainer_url: str) -> None:
    config = campaign_config(tmp_path, explainer_url, "distributed.shards=2", "distributed.work_pool='threads'")
    store, run_id, campaign = sharded_run(config, ThreadLauncher())
    assert store.output_evidence_ids(run_id) == {f.id for f in store.features(run_id) if f.live}  # in the parent
    before = run_rows(store, run_id)
    folder = results_dir(campaign.root, run_id)
    added = 0
    for shard in store.shards(run_id):
        if shard["stage"] in COLLECT_STAGES:  # states, merged: no rows
            continue
        part = folder.shard_dir(shard["stage"], shard["shard"], shard["attempts"])
        part_id = folder.read_json(f"{part}/result.json")["part_id"]
        tables = folder.read_tables(part)
        assert any(t.num_rows for t in tables.values())
        added += store.ingest_part(run_id, f"{part}#{part_id}", tables)  # the same part again
        added += store.ingest_part(run_id, f"{part}#other-name", tables)  # same rows under another name
    assert added == 0
    assert run_rows(store, run_id) == before


def test_runs_command_shows_the_shards(tmp_path: Path, explainer_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console
    from typer.testing import CliRunner

    from autointerp.cli.app import app

    monkeypatch.setattr("autointerp.cli.app.console", Console(width=300))  # the whole table on one line

    config = campaign_config(tmp_path, explainer_url, "distributed.shards=2", "distributed.work_pool='threads'")
    store, run_id, _ = sharded_run(config, ThreadLauncher())
    store.set_shard(run_id, "experiment", 0, 2, "running", 1)
    store.set_shard(run_id, "experiment", 1, 2, "failed", 3, error="boom")
    result = CliRunner().invoke(app, ["runs", "--db", str(config.store.path)])
    assert result.exit_code == 0, result.output
    # 2 shards of collection, 2 of its quiet-window round (a neuron is short of them), 2 + 2 of the LLM stages
    assert "shards" in result.output and "8 done, 1 running, 1 failed (2 restarts)" in result.output


def test_experiment_shards_equal_the_single_process_run(tmp_path: Path, explainer_url: str) -> None:
    from tests.distributed.conftest import single_process_run

    experiments = (
        "experiments.lowest_n=2",
        "experiments.score_threshold=1.0",  # every feature is weak: the two lowest get experiments
        "experiments.kinds=['input']",
        f"experiments.proposer.model='openai-compatible:{explainer_url}/v1#m'",
    )
    single_store, single_id = single_process_run(campaign_config(tmp_path / "single", explainer_url, *experiments))
    expected = run_rows(single_store, single_id)
    assert len(expected["experiments"]) >= 2  # both targets were investigated

    config = campaign_config(
        tmp_path / "sharded", explainer_url, *experiments, "distributed.shards=2", "distributed.work_pool='threads'"
    )
    store, run_id, _ = sharded_run(config, ThreadLauncher(), expect_complete=True)
    assert_same_rows(run_rows(store, run_id), expected)
    assert len(store.shards(run_id, "experiment")) == 2


def test_a_collection_shard_made_under_other_settings_or_layout_is_collected_again(
    tmp_path: Path, explainer_url: str, reference: dict[str, list[Any]]
) -> None:
    """A finished collection shard's state was reused whatever made it: a resume under another corpus (a run
    that had not merged its shards yet), or shards of an older autointerp whose sampler kept another layout
    (every rerun then failed in the merge)."""
    config = campaign_config(
        tmp_path, explainer_url, "distributed.shards=3", "distributed.work_pool='threads'", "distributed.retries=1"
    )
    broken = ThreadLauncher(failing={("collect", 1, 1), ("collect", 1, 2)})
    with pytest.raises(ShardsFailed, match=r"collect shard 2 of 3 failed 2 times"):
        sharded_run(config, broken)
    run_id = config.resolved_run_id()
    folder = Campaign(config, Store(config.store.path), run_id, ThreadLauncher()).folder
    stale = f"{folder.shard_dir('collect', 0, 1)}/result.json"
    folder.write_json(stale, {**folder.read_json(stale), "fingerprint": "made by an older autointerp"})
    healthy = ThreadLauncher()
    sharded_run(config, healthy)
    started = sorted(
        r["name"].split(f"{run_id}-")[1] for r in healthy.runs.values() if r["name"].startswith(f"{run_id}-collect-")
    )
    started = [name for name in started if not name.startswith(QUIET_STAGE)]
    assert started == ["collect-1of3-try2", "collect-2of3-try3"]  # the third shard's state is still good
    assert run_rows(Store(config.store.path), run_id) == reference


def test_dense_features_get_their_quiet_windows_from_a_second_round_of_shards(
    tmp_path: Path, explainer_url: str
) -> None:
    """Four dense neurons (some come back from the stream short of non-firing windows): the sharded run passes
    the corpus again in shards, not in the parent, and stores the very windows a single process stores; a quiet
    shard that fails is retried, and a rerun after the round reuses the shards' picks."""
    from autointerp.collect.stage import run_collect

    dense = "features.indices=[13, 67, 169, 240]"
    single = campaign_config(tmp_path / "single", explainer_url, dense)
    store = Store(single.store.path)
    store.migrate()
    run_id = single.resolved_run_id()
    store.start_run(run_id, single.model_dump(mode="json"), single.config_hash(), "test", None)
    run_collect(single, store, run_id)
    expected = run_rows(store, run_id)["exemplars"]

    config = campaign_config(
        tmp_path / "sharded", explainer_url, dense, "distributed.shards=3", "distributed.work_pool='threads'"
    )
    store = Store(config.store.path)
    store.migrate()
    store.start_run(run_id, config.model_dump(mode="json"), config.config_hash(), "test", None)
    launcher = ThreadLauncher(failing={(QUIET_STAGE, 1, 1)})
    campaign = Campaign(config, store, run_id, launcher)
    campaign.poll_s = 0.05
    campaign.collect()
    assert_same_rows({"exemplars": run_rows(store, run_id)["exemplars"]}, {"exemplars": expected})
    quiet = {s["shard"]: s for s in store.shards(run_id, QUIET_STAGE)}
    assert [(quiet[n]["status"], quiet[n]["attempts"]) for n in range(3)] == [("done", 1), ("done", 2), ("done", 1)]
    picked = campaign.folder.read_state(f"{campaign.folder.shard_dir(QUIET_STAGE, 0, 1)}/state.pt")
    assert picked["features"] and picked["windows_seen"] == 16  # the short features, over its 2 batches of 8

    # the collection stored, the same round again (a resume before the write) starts no shard
    again = ThreadLauncher()
    rerun = Campaign(config, store, run_id, again)
    rerun.poll_s = 0.05
    with store.transaction() as con:  # as if the parent had stopped before its write
        con.execute("DELETE FROM features WHERE run_id = ?", [run_id])
    rerun.collect()
    assert again.runs == {}
    assert_same_rows({"exemplars": run_rows(store, run_id)["exemplars"]}, {"exemplars": expected})
