"""The shard flow: what a work pool's worker runs for one shard of one stage of a run.

A shard never opens the campaign's DuckDB file. A collection shard streams its range of corpus
windows through a sampler and writes the sampler's state; a quiet-window shard, in a second round,
passes its range again for the features the merge found short of non-firing windows and writes what
it picked; an LLM-stage shard loads the run's rows
that its stage needs (written by the parent under `input/<stage>/`) into a DuckDB file of its own,
runs the stage on its features there, and writes the rows it added as Parquet parts. `result.json`
is written last: its presence means the shard's part is whole.

While it runs, the shard rewrites its heartbeat file every few seconds, so the parent can tell a
shard whose worker died (kill -9, a lost machine: the flow run stays Running) from a slow one.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import tempfile
import threading
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from autointerp.pipeline.prefect_env import configure_prefect_defaults

configure_prefect_defaults()

import torch  # noqa: E402
from prefect import flow  # noqa: E402

from autointerp.collect.results import SamplingPlan  # noqa: E402
from autointerp.collect.sampler import ExemplarSampler  # noqa: E402
from autointerp.collect.stream import batches  # noqa: E402
from autointerp.config import RunConfig  # noqa: E402
from autointerp.corpus.sources import corpus_windows  # noqa: E402
from autointerp.distributed.parts import ResultsDir, results_dir  # noqa: E402
from autointerp.pipeline.pool import StageResult  # noqa: E402
from autointerp.store.database import Store  # noqa: E402

log = logging.getLogger(__name__)

STAGE_TABLES: dict[str, tuple[str, ...]] = {
    "explain": ("runs", "features", "exemplars", "explanations", "llm_calls"),
    "score": ("runs", "features", "exemplars", "explanations", "scores", "llm_calls", "neighbours"),
    "experiment": ("runs", "features", "exemplars", "explanations", "scores", "experiments", "llm_calls", "reviews"),
}
"""The run's tables a shard of each LLM stage starts from."""
ADDED_TABLES = ("explanations", "scores", "experiments", "llm_calls")
"""Tables whose new rows a shard hands back."""
HEARTBEAT_S = 5.0
"""Seconds between heartbeats (at most; the parent asks for a fifth of its timeout)."""


class Heartbeat:
    """Rewrites a file with a growing counter every few seconds until stopped."""

    def __init__(self, folder: ResultsDir, relative: str, every_s: float = HEARTBEAT_S) -> None:
        self.folder, self.relative, self.every_s = folder, relative, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)

    def _beat(self) -> None:
        for count in itertools.count():
            try:
                self.folder.write_bytes(self.relative, str(count).encode())
            except OSError as exc:  # a missed beat is not fatal; a long silence is what the parent detects
                log.warning("heartbeat: %s", exc)
            if self._stop.wait(self.every_s):
                return

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def collect_fingerprint(config: RunConfig, start: int, end: int) -> str:
    """Returns what a collection shard's state was made under: the config's hash (its settings), the
    sampler's layout (its kept quantile bins) and the windows. The campaign reuses a finished shard only
    under the same fingerprint (a resume with another corpus, or a newer autointerp, collects it again)."""
    return f"{config.config_hash()}:kept-bins-{SamplingPlan.from_config(config.collect).kept_bins}:{start}-{end}"


def collect_shard(config: RunConfig, start: int, end: int) -> dict[str, Any]:
    """Streams windows [start, end) of the run's corpus through a sampler; returns its state (CPU)."""
    from autointerp.neighbours.cooccurrence import CooccurrenceLog
    from autointerp.pipeline.common import load_subject
    from autointerp.subject.kinds import build_feature_source

    subject = load_subject(config)
    source = build_feature_source(config.features, subject)
    corpus, collect = config.corpus, config.collect
    windows = corpus_windows(subject.tokenizer, corpus)
    plan = SamplingPlan.from_config(collect)
    sampler = ExemplarSampler(len(source.indices), corpus.window_tokens, plan, subject.device, source.skipped_tokens)
    sampler.windows_seen = start  # global window numbers: the random keys depend on them
    if config.neighbours.enabled:  # neighbours hook: the co-occurrence log, merged by the campaign
        neighbours = config.neighbours
        sampler.cooccurrence = CooccurrenceLog(len(source.indices), neighbours.k, neighbours.max_cooccurrence_entries)
    for batch in batches(itertools.islice(windows, start, end), corpus.batch_size):
        token_ids = torch.tensor([w.token_ids for w in batch], dtype=torch.long, device=subject.device)
        with torch.inference_mode():
            sampler.update(source.activation_chunks(token_ids), batch)
    return sampler.state_dict()


QUIET_STAGE = "collect-quiet"
"""The second round of collection shards: the quiet windows of the features the merge found short of them
(`autointerp.collect.quiet_pass`), each shard over its range of the corpus."""
COLLECT_STAGES = ("collect", QUIET_STAGE)
"""Stages whose shards hand back a state (`state.pt`) that the parent merges, not rows."""
QUIET_INPUT = f"input/{QUIET_STAGE}/pick.pt"
"""The features a quiet-window shard passes over and their thresholds: an empty `QuietPick`'s state."""


def quiet_fingerprint(config: RunConfig, start: int, end: int, pick: dict[str, Any]) -> str:
    """Returns what a quiet-window shard was made under: its windows' collection fingerprint and the features
    and thresholds it picked for (which the merge of the first round decides)."""
    asked = json.dumps([pick["features"], pick["thresholds"], pick["wanted"], pick["seed"]])
    return f"{collect_fingerprint(config, start, end)}:quiet-{hashlib.sha256(asked.encode()).hexdigest()[:16]}"


def quiet_shard(config: RunConfig, pick: dict[str, Any], start: int, end: int) -> dict[str, Any]:
    """Passes windows [start, end) of the run's corpus for the features of `pick` (`QUIET_INPUT`); returns the
    quiet windows it picked (`QuietPick.state_dict`, CPU)."""
    from autointerp.collect.quiet_pass import QuietPick
    from autointerp.pipeline.common import load_subject
    from autointerp.subject.kinds import build_feature_source

    subject = load_subject(config)
    source = build_feature_source(config.features, subject)
    corpus = config.corpus
    quiet = QuietPick(pick["features"], pick["thresholds"], pick["wanted"], pick["seed"], subject.device)
    windows = corpus_windows(subject.tokenizer, corpus)
    for batch in batches(itertools.islice(windows, start, end), corpus.batch_size):
        token_ids = torch.tensor([w.token_ids for w in batch], dtype=torch.long, device=subject.device)
        with torch.inference_mode():
            quiet.update(source.activation_chunks(token_ids), batch, start + quiet.windows_seen)
    return quiet.state_dict()


def llm_stage_shard(
    config: RunConfig, folder: ResultsDir, stage: str, run_id: str, feature_ids: list[str], workdir: Path
) -> tuple[StageResult, dict[str, Any]]:
    """Runs one LLM stage on `feature_ids` in a DuckDB file of the shard's own; returns the tallies and
    the rows it added (table -> Arrow)."""
    from autointerp.experiments.stage import run_experiments
    from autointerp.explain.stage import run_explain
    from autointerp.llm import LLMSession
    from autointerp.prompts import use_prompt_folder
    from autointerp.score.stage import run_score

    store = Store(workdir / "shard.duckdb")
    store.migrate()
    inputs = folder.read_tables(f"input/{stage}")
    store.load_tables(inputs)
    known = {t: inputs[t].column("id").to_pylist() if t in inputs else [] for t in ADDED_TABLES}
    wanted = set(feature_ids)
    use_prompt_folder(config.llm.prompts)
    session = LLMSession.for_run(config.llm, store, run_id)
    if stage == "explain":
        # the stage explains the live features its store holds: keep only this shard's
        with store.transaction() as con:
            con.execute("CREATE TEMP TABLE keep AS SELECT unnest(?::VARCHAR[]) AS id", [sorted(wanted)])
            con.execute("DELETE FROM features WHERE id NOT IN (SELECT id FROM keep)")
        result = run_explain(config, store, run_id, session)
    elif stage == "score":
        result = run_score(config, store, run_id, session, feature_ids=wanted)
    elif stage == "experiment":
        result = run_experiments(config, store, run_id, session, feature_ids=feature_ids)
    else:
        raise ValueError(f"unknown stage {stage!r}")
    added = {t: store.rows_not_in(run_id, t, known[t]) for t in ADDED_TABLES}
    return result, added


def _result_json(result: StageResult) -> dict[str, Any]:
    data = asdict(result)
    data.pop("stop_error", None)
    return data


@flow(name="autointerp-shard")
def run_shard(
    config_data: dict[str, Any],
    run_id: str,
    results_root: str,
    stage: str,
    shard: int,
    attempt: int,
    window_range: list[int] | None = None,
    feature_ids: list[str] | None = None,
    heartbeat_s: float = HEARTBEAT_S,
) -> str:
    """Runs one shard and writes its part under `<results_root>/<run_id>/<stage>/shard-NNNN/try-A/`.

    Collection: `window_range` [start, end) of the corpus windows, for every feature (`collect`) or for the
    features short of quiet windows (`collect-quiet`, reading `QUIET_INPUT`). LLM stages: the stage on
    `feature_ids`. Returns the part's folder.
    """
    config = RunConfig.model_validate(config_data)
    folder = results_dir(results_root, run_id)
    part = folder.shard_dir(stage, shard, attempt)
    part_id = uuid.uuid4().hex
    with Heartbeat(folder, f"{part}/heartbeat", heartbeat_s):
        folder.remove(f"{part}/result.json")
        if stage in COLLECT_STAGES:
            if window_range is None:
                raise ValueError("a collection shard needs window_range")
            start, end = window_range
            if stage == QUIET_STAGE:
                pick = folder.read_state(QUIET_INPUT)
                folder.write_state(f"{part}/state.pt", quiet_shard(config, pick, start, end))
                fingerprint = quiet_fingerprint(config, start, end, pick)
            else:
                folder.write_state(f"{part}/state.pt", collect_shard(config, start, end))
                fingerprint = collect_fingerprint(config, start, end)
            result_json = {"stage": stage, "windows": [start, end], "part_id": part_id, "fingerprint": fingerprint}
            folder.write_json(f"{part}/result.json", result_json)
        else:
            with tempfile.TemporaryDirectory(prefix="autointerp-shard-") as workdir:
                result, added = llm_stage_shard(config, folder, stage, run_id, feature_ids or [], Path(workdir))
            folder.write_tables(part, added)
            folder.write_json(f"{part}/result.json", {**_result_json(result), "part_id": part_id})
    return part
