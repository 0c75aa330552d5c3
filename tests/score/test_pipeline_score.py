"""The score stage on a real DuckDB file: metric rows beside distractor rows, flags, resume."""

from __future__ import annotations

import json
from pathlib import Path

from autointerp.config import load_config
from autointerp.score.stage import run_score
from autointerp.store.database import Store, now
from tests.conftest import session_of


def _seed(store: Store) -> None:
    store.migrate()
    months = ["We", " met", " in", " March"]
    code = ["The", " compiler", " failed", "."]
    features, exemplars, explanations = [], [], []
    for i, (fid, text, fires) in enumerate([("f/months", "names of months", True), ("f/silent", "compilers", False)]):
        features.append({"run_id": "r", "id": fid, "idx": i, "hook": "mlp.0", "max_activation": 1.0, "dead": False})
        for rank, (tokens, acts) in enumerate([(months, [0, 0, 0, 1.0 if fires else 0]), (code, [0, 0, 0, 0])]):
            exemplars.append({"run_id": "r", "feature_id": fid, "kind": "top" if rank == 0 else "random",
                              "rank": 0, "tokens": tokens, "activations": acts, "split": "score"})  # fmt: skip
        explanations.append({"id": f"e{i}", "run_id": "r", "feature_id": fid, "iteration": 0, "text": text,
                             "created_at": now()})  # fmt: skip
    store.write_results({"features": features, "exemplars": exemplars, "explanations": explanations})


def test_scores_sit_beside_distractor_scores_and_silent_features_are_flagged(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    _seed(store)
    config = load_config(None, [f"store.path='{tmp_path / 's.duckdb'}'", 'score.methods=["embedding"]'])
    assert run_score(config, store, "r", session_of(config, store, "r")).done == 2
    rows = {(r["explanation_id"], r["metric"]): r for r in store.query("SELECT * FROM scores")}
    assert set(rows) == {(e, m) for e in ("e0", "e1") for m in ("embedding_auroc", "embedding_auroc_distractor")}
    assert rows["e0", "embedding_auroc"]["value"] == 1.0
    distractor = json.loads(rows["e0", "embedding_auroc_distractor"]["details"])
    assert distractor["distractor_text"] == "compilers" and distractor["distractor_feature_id"] == "f/silent"
    silent = rows["e1", "embedding_auroc"]
    assert silent["value"] is None and "never fires" in json.loads(silent["details"])["undefined"]
    assert run_score(config, store, "r", session_of(config, store, "r")).done == 0  # resumed: nothing new
    assert len(store.query("SELECT * FROM scores")) == 4
