"""The collect stage on the real model and DuckDB: kill -9 mid-collection, resume, same exemplars."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from autointerp.collect.stage import checkpoint_path, run_collect
from autointerp.config import RunConfig, load_config
from autointerp.store.database import Store
from autointerp.subject import SubjectModel

ROOT = Path(__file__).resolve().parents[2]

# Runs the collect stage with a pause per batch, so the parent can kill it between checkpoints.
CHILD = """
import json, sys, time
from autointerp.config import RunConfig
from autointerp.collect.stage import run_collect
from autointerp.store.database import Store
from autointerp.subject.sources import MlpNeuronSource

original = MlpNeuronSource.activation_chunks
def slow(self, token_ids):
    time.sleep(0.15)
    return original(self, token_ids)
MlpNeuronSource.activation_chunks = slow
config = RunConfig.model_validate(json.loads(sys.argv[1]))
store = Store(config.store.path)
store.migrate()
run_collect(config, store, config.resolved_run_id())
"""


def _config(folder: Path) -> RunConfig:
    return load_config(
        None,
        [
            f"store.path='{folder / 'db.duckdb'}'",
            "features.indices=[5, 400, 1201]",
            "features.layer=2",
            "corpus.max_windows=60",
            "corpus.window_tokens=12",
            "corpus.batch_size=4",
            "collect.top_k=4",
            "collect.quantiles=3",
            "collect.per_quantile=2",
            "collect.random_windows=2",
            "collect.checkpoint_every=2",
        ],
    )


def _exemplars(config: RunConfig) -> list[tuple[object, ...]]:
    rows = Store(config.store.path).query(
        "SELECT feature_id, kind, rank, doc_id, token_offset, token_ids, activations, split FROM exemplars "
        "WHERE run_id = ? ORDER BY ALL",
        [config.resolved_run_id()],
    )
    return [tuple(r.values()) for r in rows]


def test_kill_9_then_resume_gives_the_exemplars_of_an_uninterrupted_run(subject: SubjectModel, tmp_path: Path) -> None:
    reference, interrupted = _config(tmp_path / "reference"), _config(tmp_path / "interrupted")
    run_id = reference.resolved_run_id()
    assert interrupted.resolved_run_id() == run_id  # the store path is not part of the run id
    Store(reference.store.path).migrate()
    assert run_collect(reference, Store(reference.store.path), run_id) == 3
    assert not checkpoint_path(reference, run_id).exists()  # removed once the rows are stored

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, interrupted.model_dump_json()],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    checkpoint = checkpoint_path(interrupted, run_id)
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.4)  # a few more batches, so the kill lands between checkpoints
    assert child.poll() is None, "the child finished before it could be killed; slow it down"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    saved = torch.load(checkpoint, weights_only=True)
    windows_done = saved["state"]["counters"][2]
    assert 0 < windows_done < 60
    store = Store(interrupted.store.path)
    assert not store.has_features(run_id)

    assert run_collect(interrupted, store, run_id) == 3
    assert _exemplars(interrupted) == _exemplars(reference)
    features = store.features(run_id)
    assert features == Store(reference.store.path).features(run_id)
    assert all(len(f.window_max_histogram or []) > 0 for f in features)
    assert {r["kind"] for r in store.query("SELECT DISTINCT kind FROM exemplars")} >= {"top", "random", "quantile-3"}
    assert not checkpoint.exists()
    assert run_collect(interrupted, store, run_id) == 3  # finished: skipped on rerun


def test_planted_run_stores_its_features(subject: SubjectModel, tmp_path: Path) -> None:
    config = load_config(
        None,
        [
            f"store.path='{tmp_path / 'db.duckdb'}'",
            "features.kind=planted",
            "corpus.max_windows=24",
            "corpus.window_tokens=16",
            "collect.top_k=2",
        ],
    )
    store = Store(config.store.path)
    store.migrate()
    run_id = config.resolved_run_id()
    assert run_collect(config, store, run_id) >= 3
    digits = store.feature(run_id, "planted/digits")
    assert digits is not None
    assert digits.kind == "planted" and digits.hook == "planted" and digits.model == "planted"
    for row in store.exemplars(run_id, "planted/digits"):
        if row.kind == "top" and row.max_activation > 0:
            assert any(t.strip().isdigit() for t, a in zip(row.tokens, row.activations, strict=True) if a > 0)
