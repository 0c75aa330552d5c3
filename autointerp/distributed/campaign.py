"""The parent of a sharded run: split each stage into shards, run them on a work pool, merge, ingest.

Per stage the parent plans the shards (collection: batch-aligned ranges of corpus windows; the LLM
stages: contiguous slices of the run's features), starts each one as a flow run of the shard
deployment (`run_deployment(..., timeout=0)`), and watches them. A shard whose flow run completed
is ingested at once (its Parquet part, in one transaction that also marks the shard done; a part
already ingested adds nothing); collection shards' sampler states are merged exactly once all are
done, and a second round of shards over the same windows finds the quiet windows of the features
the merge found short of them (`collect.quiet_pass`). A shard whose flow run failed, crashed or was
cancelled, or whose heartbeat stopped (its worker was killed: nobody is left to report the crash, so
the parent marks the flow run Crashed), is started again, up to `distributed.retries` times; after
that the run fails naming the shard, and rerunning the same command starts only the shards not done.

Only the parent opens the campaign's DuckDB file. `Launcher` is the seam to Prefect: the tests of
the retry logic swap in an in-process one.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from autointerp.collect.merge_shards import merge_states
from autointerp.collect.quiet_pass import QuietPick, quiet_pick_for
from autointerp.collect.results import CollectionResult, SamplingPlan
from autointerp.collect.stage import store_collection
from autointerp.config import RunConfig
from autointerp.distributed.launcher import Launcher, NoWorkers, PrefectLauncher, progress_log
from autointerp.distributed.parts import ResultsDir, results_dir, store_folder
from autointerp.distributed.shard import (
    ADDED_TABLES,
    COLLECT_STAGES,
    HEARTBEAT_S,
    QUIET_INPUT,
    QUIET_STAGE,
    STAGE_TABLES,
    collect_fingerprint,
    quiet_fingerprint,
)
from autointerp.errors import AutointerpError, ConfigError
from autointerp.experiments.stage import select_targets
from autointerp.neighbours.stage import run_neighbours
from autointerp.outputs.stage import run_outputs
from autointerp.pipeline.common import live_features, load_subject
from autointerp.pipeline.pool import StageResult
from autointerp.store.database import Store
from autointerp.subject.kinds import build_feature_source

log = logging.getLogger(__name__)

LLM_STAGES = ("explain", "score", "experiment")
FAILED_STATES = {"FAILED", "CRASHED", "CANCELLED", "CANCELLING"}
POLL_S = 1.0
PICKUP_S = 120.0
"""Seconds a shard may wait for a worker while none of the pool is online (at most
`distributed.start_timeout_s`); then the run stops with one line saying how to start one."""


class ShardsFailed(AutointerpError):
    """Shards that failed every attempt; the run is resumable (done shards are kept)."""


@dataclass
class Shard:
    """One shard of one stage: its number, its work, and how its current flow run is doing."""

    stage: str
    number: int
    work: dict[str, Any]
    """`window_range` (collection) or `feature_ids` (LLM stages): parameters of the shard flow."""
    attempts: int = 0
    """Attempts so far, over every invocation of the run (numbers the attempt folders)."""
    retried: int = -1
    """Attempts started by this invocation beyond the first (bounded by `distributed.retries`)."""
    flow_run_id: str | None = None
    errors: list[str] = field(default_factory=list)
    reason: str = ""
    """Why the current attempt ended without a result, in a few words (for the progress line)."""
    started_at: float = 0.0
    """When the current attempt was started (its flow run Scheduled), time.monotonic()."""
    picked_up: bool = False
    """Whether a worker took the current attempt (it left Scheduled)."""
    beat: bytes | None = None
    beat_changed: float = 0.0
    """When the heartbeat last changed (or the run was first seen running), time.monotonic()."""
    pending_since: float = 0.0
    """When the flow run was first seen Pending (a worker starting it), time.monotonic()."""

    def name(self, count: int) -> str:
        return f"{self.stage}: shard {self.number + 1}/{count}"


def collection_shards(config: RunConfig, shards: int) -> list[dict[str, Any]]:
    """Returns up to `shards` window ranges covering [0, max_windows), each a whole number of batches
    (so every batch, and so every float sum, is the one a single process would compute)."""
    batch, total = config.corpus.batch_size, config.corpus.max_windows
    batches = -(-total // batch)
    count = min(shards, batches)
    size, extra = divmod(batches, count)
    ranges, first = [], 0
    for number in range(count):
        last = first + size + (number < extra)
        ranges.append({"window_range": [first * batch, min(last * batch, total)]})
        first = last
    return ranges


def feature_shards(feature_ids: list[str], shards: int) -> list[dict[str, Any]]:
    """Returns up to `shards` contiguous, near-equal slices of `feature_ids`."""
    if not feature_ids:
        return []
    count = min(shards, len(feature_ids))
    size, extra = divmod(len(feature_ids), count)
    slices, start = [], 0
    for number in range(count):
        end = start + size + (number < extra)
        slices.append({"feature_ids": feature_ids[start:end]})
        start = end
    return slices


class Campaign:
    """Runs one run's stages as shards on a launcher and ingests their parts into the run's store."""

    def __init__(self, config: RunConfig, store: Store, run_id: str, launcher: Launcher) -> None:
        self.config, self.store, self.run_id, self.launcher = config, store, run_id, launcher
        self.settings = config.distributed
        base = self.settings.results_dir or str(store.path.resolve().parent / "parts")
        self.root = store_folder(base, store.path)
        """`<results_dir>/<store name>-<hash of its path>`: two stores of one config never share a folder."""
        self.folder: ResultsDir = results_dir(self.root, run_id)
        self.poll_s = POLL_S
        self.pickup_s = min(PICKUP_S, self.settings.start_timeout_s)
        self.pool = self.settings.work_pool or "?"
        self._quiet_asked: dict[str, Any] = {}
        """The quiet-window round's features and thresholds (`QUIET_INPUT`), once the merge has decided them."""

    # the stages -----------------------------------------------------------------------------------

    def run(self) -> list[StageResult]:
        """Runs collection, then output evidence and each LLM stage; returns their tallies (as `label_features`)."""
        self.collect()
        run_neighbours(self.config, self.store, self.run_id)  # cosine neighbours, in this process
        results = [run_outputs(self.config, self.store, self.run_id)]  # output evidence, in this process
        for stage in LLM_STAGES:
            result = self.llm_stage(stage)
            results.append(result)
            if result.stopped is not None:
                break
        return results

    def collect(self) -> None:
        """Collection shards, then their exact merge, stored in one transaction."""
        if self.store.has_features(self.run_id):
            log.info("collection of %s already stored; skipping", self.run_id)
            return
        specs = collection_shards(self.config, self.settings.shards)
        self._run_shards("collect", specs)
        attempts = [row["attempts"] for row in self._stored("collect", len(specs))]
        states = [
            self.folder.read_state(f"{self.folder.shard_dir('collect', n, attempt)}/state.pt")
            for n, attempt in enumerate(attempts)
        ]
        progress_log.info("collect: merging %d shards", len(specs))
        plan = SamplingPlan.from_config(self.config.collect)
        sampler = merge_states(states, self.config.corpus.window_tokens, plan)
        stats = sampler.stats()
        subject = load_subject(self.config)
        source = build_feature_source(self.config.features, subject)
        result = CollectionResult(
            feature_indices=source.indices,
            stats=stats,
            exemplars=sampler.exemplars(stats),
            cooccurrence=sampler.cooccurrence,  # neighbours: merged from the shards' logs
        )
        if self.config.collect.quiet_pass:
            self.collect_quiet(specs, result, plan, subject.device)
        store_collection(self.store, self.run_id, subject, source, result, self.config.collect)

    def collect_quiet(
        self, specs: list[dict[str, Any]], result: CollectionResult, plan: SamplingPlan, device: torch.device
    ) -> None:
        """The second round: the features of the merged `result` short of non-firing windows get them from
        shards over the same window ranges (`autointerp.collect.quiet_pass`), merged into `result`."""
        pick = quiet_pick_for(result, plan, device)
        if pick is None:
            return
        self._quiet_asked = pick.state_dict()
        progress_log.info("%s: %d features short of non-firing windows", QUIET_STAGE, len(pick.features))
        # written every time: a done shard whose part is gone, or made under another layout, runs again
        self.folder.write_state(QUIET_INPUT, self._quiet_asked)
        self._run_shards(QUIET_STAGE, specs)
        attempts = [row["attempts"] for row in self._stored(QUIET_STAGE, len(specs))]
        states = [
            self.folder.read_state(f"{self.folder.shard_dir(QUIET_STAGE, n, attempt)}/state.pt")
            for n, attempt in enumerate(attempts)
        ]
        merged = QuietPick.merged(states, device)
        if (merged.features, merged.thresholds) != (pick.features, pick.thresholds):
            raise ShardsFailed(f"{QUIET_STAGE} shards picked for other features than asked; rerun the same command")
        merged.apply(result)

    def llm_stage(self, stage: str) -> StageResult:
        """One LLM stage over the run's live features (experiments: over the features it targets)."""
        if stage == "experiment":
            feature_ids = select_targets(self.config, self.store, self.run_id)
        else:
            feature_ids = [f.id for f in live_features(self.store, self.run_id)]
        specs = feature_shards(feature_ids, self.settings.shards)
        if any(s["status"] != "done" for s in self._stored(stage, len(specs))):
            self.folder.write_tables(f"input/{stage}", self.store.export_run(self.run_id, STAGE_TABLES[stage]))
        self._run_shards(stage, specs)
        total = StageResult(stage)
        for number, row in enumerate(self._stored(stage, len(specs))):
            relative = f"{self.folder.shard_dir(stage, number, row['attempts'])}/result.json"
            if self.folder.exists(relative):
                _add(total, self.folder.read_json(relative))
        return total

    # shards ---------------------------------------------------------------------------------------

    def _stored(self, stage: str, count: int) -> list[dict[str, Any]]:
        stored = {s["shard"]: s for s in self.store.shards(self.run_id, stage) if s["shards"] == count}
        return [stored.get(n, {"status": "pending", "attempts": 0}) for n in range(count)]

    def _done_before(self, stage: str, number: int, row: dict[str, Any], work: dict[str, Any]) -> bool:
        """Whether a shard is done and its result still there. A collection shard's state is read again by
        the merge: one whose folder is gone (parts of an older layout), or that was made under other
        settings or another sampler layout (`collect_fingerprint`), is done again."""
        if row["status"] != "done":
            return False
        if stage not in COLLECT_STAGES:
            return True
        part = self.folder.shard_dir(stage, number, row["attempts"])
        if not (self.folder.exists(f"{part}/state.pt") and self.folder.exists(f"{part}/result.json")):
            return False
        start, end = work["window_range"]
        if stage == QUIET_STAGE:
            expected = quiet_fingerprint(self.config, start, end, self._quiet_asked)
        else:
            expected = collect_fingerprint(self.config, start, end)
        return self.folder.read_json(f"{part}/result.json").get("fingerprint") == expected

    def _run_shards(self, stage: str, specs: list[dict[str, Any]]) -> None:
        """Runs every shard not done yet until each is done or has failed every attempt."""
        count = len(specs)
        stored = self._stored(stage, count)
        todo = [
            Shard(stage, n, work, attempts=row["attempts"] or 0)
            for n, (work, row) in enumerate(zip(specs, stored, strict=True))
            if not self._done_before(stage, n, row, work)
        ]
        if not todo:
            return
        before = f" ({count - len(todo)} done before)" if len(todo) < count else ""
        progress_log.info("%s: %d of %d shards on work pool %r%s", stage, len(todo), count, self.pool, before)
        started = time.monotonic()
        for shard in todo:
            self._start(shard, count)
        active, failed, done = list(todo), [], count - len(todo)
        waiting_said: float | None = None
        while active:
            time.sleep(self.poll_s)
            for shard in list(active):
                outcome = self._check(shard, count)
                if outcome == "running":
                    continue
                active.remove(shard)
                reason = shard.reason
                if outcome == "retry":
                    self._start(shard, count)
                    progress_log.info("%s %s, restarting (attempt %d)", shard.name(count), reason, shard.attempts)
                    active.append(shard)
                elif outcome == "failed":
                    progress_log.info("%s %s, no attempts left", shard.name(count), reason)
                    failed.append(shard)
                else:
                    done += 1
                    progress_log.info("%s %s (%d of %d shards finished)", shard.name(count), reason, done, count)
            waiting_said = self._watch_pickup(stage, active, count, waiting_said)
        if failed:
            named = "; ".join(
                f"{s.stage} shard {s.number + 1} of {count} failed {s.attempts} times (last: {s.errors[-1]})"
                for s in failed
            )
            raise ShardsFailed(f"{named}. Rerun the same command to redo the unfinished shards")
        progress_log.info("%s: %d shards done in %.0f s", stage, count, time.monotonic() - started)

    def _watch_pickup(self, stage: str, active: list[Shard], count: int, said: float | None) -> float | None:
        """Stops the run when shards wait for a worker longer than `pickup_s` and no worker of the pool
        is online; says every `pickup_s` that shards are waiting when the workers are busy. Returns when
        it last said so."""
        now = time.monotonic()
        waiting = [s for s in active if not s.picked_up]
        if not waiting or now - min(s.started_at for s in waiting) < self.pickup_s:
            return said
        if said is not None and now - said < self.pickup_s:
            return said
        online = self.launcher.workers_online()
        if online == 0:
            message = f"no worker picked it up in {self.pickup_s:g} s: no worker of work pool {self.pool!r} is online"
            for shard in waiting:
                assert shard.flow_run_id is not None
                self.launcher.cancel(shard.flow_run_id, message)
                self.store.set_shard(
                    self.run_id, shard.stage, shard.number, count, "pending", shard.attempts, shard.flow_run_id,
                    message,
                )  # fmt: skip
            raise NoWorkers(
                f"{stage}: {len(waiting)} shards waited {self.pickup_s:g} s and no worker of Prefect work pool "
                f"{self.pool!r} is online: start one on each machine with "
                f"`prefect worker start --pool {self.pool} --limit 1`, then rerun the same command"
            )
        busy = "busy" if online else "workers unknown"
        progress_log.info(
            "%s: %d shards waiting for a worker of pool %r (%s online, %s)", stage, len(waiting), self.pool,
            "?" if online is None else online, busy,
        )  # fmt: skip
        return now

    def _start(self, shard: Shard, count: int) -> None:
        shard.attempts = self.store.claim_attempt(self.run_id, shard.stage, shard.number, count, shard.attempts + 1)
        shard.retried += 1
        shard.beat, shard.beat_changed, shard.pending_since = None, 0.0, 0.0
        shard.started_at, shard.picked_up, shard.reason = time.monotonic(), False, ""
        parameters = {
            "config_data": self.config.model_dump(mode="json"),
            "run_id": self.run_id,
            "results_root": self.root,
            "stage": shard.stage,
            "shard": shard.number,
            "attempt": shard.attempts,
            "heartbeat_s": max(0.1, min(HEARTBEAT_S, self.settings.heartbeat_timeout_s / 5)),
            **shard.work,
        }
        name = f"{self.run_id}-{shard.stage}-{shard.number + 1}of{count}-try{shard.attempts}"
        shard.flow_run_id = self.launcher.start(name, parameters)
        self.store.set_shard(
            self.run_id, shard.stage, shard.number, count, "running", shard.attempts, shard.flow_run_id
        )
        log.info("%s: started flow run %s (attempt %d)", shard.name(count), shard.flow_run_id, shard.attempts)

    def _check(self, shard: Shard, count: int) -> str:
        """Returns running, done, retry or failed for a shard's current flow run (ingesting a done one)."""
        assert shard.flow_run_id is not None
        state, message = self.launcher.state(shard.flow_run_id)
        error = reason = None
        if state not in ("SCHEDULED", "PAUSED") and not shard.picked_up:
            shard.picked_up = True
        if state == "COMPLETED":
            part = self.folder.shard_dir(shard.stage, shard.number, shard.attempts)
            if self.folder.exists(f"{part}/result.json"):
                return self._ingest(shard, count)
            error = "the flow run completed without writing its result"
            reason = "completed without its result"
        elif state in FAILED_STATES:
            error = f"{state.title()}: {message}".strip()
            said = f" ({_short(message)})" if message else ""
            reason = f"{'cancelled' if state.startswith('CANCEL') else state.lower()}{said}"
        elif state == "PENDING":  # a worker is starting its process: no heartbeat yet
            now = time.monotonic()
            if shard.pending_since == 0.0:
                shard.pending_since = now
            elif now - shard.pending_since > self.settings.start_timeout_s:
                error = f"pending for {self.settings.start_timeout_s:g} s without starting: its worker is gone"
                reason = "crashed (stuck pending: its worker is gone)"
                self.launcher.crash(shard.flow_run_id, error)
        elif state == "RUNNING":
            if shard.beat_changed == 0.0:
                progress_log.info("%s running (attempt %d)", shard.name(count), shard.attempts)
            beat = self._heartbeat(shard)
            now = time.monotonic()
            if shard.beat_changed == 0.0 or beat != shard.beat:
                shard.beat, shard.beat_changed = beat, now
            elif now - shard.beat_changed > self.settings.heartbeat_timeout_s:
                error = f"no heartbeat for {self.settings.heartbeat_timeout_s:g} s: its worker is gone"
                reason = "crashed (heartbeat lost)"
                self.launcher.crash(shard.flow_run_id, error)
        if error is None:
            return "running"
        shard.errors.append(f"flow run {shard.flow_run_id}: {error}")
        shard.reason = reason or error
        log.info("%s attempt %d: %s", shard.name(count), shard.attempts, error)
        if shard.retried < self.settings.retries:
            return "retry"
        self.store.set_shard(
            self.run_id, shard.stage, shard.number, count, "failed", shard.attempts, shard.flow_run_id, error
        )
        return "failed"

    def _heartbeat(self, shard: Shard) -> bytes | None:
        relative = f"{self.folder.shard_dir(shard.stage, shard.number, shard.attempts)}/heartbeat"
        try:
            return self.folder.read_bytes(relative)
        except (FileNotFoundError, OSError):
            return None

    def _ingest(self, shard: Shard, count: int) -> str:
        """Ingests a finished shard's part and marks it done (LLM stages: in one transaction); a shard
        that left features unfinished stays `incomplete`, so a rerun starts it again."""
        part = self.folder.shard_dir(shard.stage, shard.number, shard.attempts)
        result = self.folder.read_json(f"{part}/result.json")
        unfinished = result.get("failed") or result.get("not_reached") or result.get("stopped")
        complete = shard.stage in COLLECT_STAGES or not unfinished
        status = "done" if complete else "incomplete"
        if shard.stage not in COLLECT_STAGES:
            tables = {t: rows for t, rows in self.folder.read_tables(part).items() if t in ADDED_TABLES}
            inserted = self.store.ingest_part(
                self.run_id, f"{part}#{result['part_id']}", tables, shard=(shard.stage, shard.number, status)
            )
            log.info("%s: ingested %d rows", shard.name(count), inserted)
        self.store.set_shard(self.run_id, shard.stage, shard.number, count, status, shard.attempts, shard.flow_run_id)
        shard.reason = status if complete else "incomplete (features left undone; a rerun redoes it)"
        return "done"


def _short(message: str, limit: int = 120) -> str:
    """Returns the first line of a message, cut to `limit` characters."""
    line = message.strip().splitlines()[0] if message.strip() else ""
    return line if len(line) <= limit else f"{line[: limit - 1]}…"


def _add(total: StageResult, part: dict[str, Any]) -> None:
    """Adds a shard's tallies (`result.json`) to a stage's."""
    total.total += part.get("total", 0)
    total.done += part.get("done", 0)
    for reason, n in part.get("skipped", {}).items():
        total.skipped[reason] = total.skipped.get(reason, 0) + n
    total.failed.update(part.get("failed", {}))
    total.not_reached += part.get("not_reached", 0)
    if part.get("stopped") and total.stopped is None:
        total.stopped = part["stopped"]


def run_campaign(config: RunConfig, store: Store, run_id: str, launcher: Launcher | None = None) -> list[StageResult]:
    """Runs a whole run as shards on `distributed.work_pool`; returns the LLM stages' tallies."""
    if config.distributed.work_pool is None and launcher is None:
        raise ConfigError("distributed.work_pool is not set: a sharded run needs a Prefect work pool")
    return Campaign(config, store, run_id, launcher or PrefectLauncher(config.distributed)).run()
