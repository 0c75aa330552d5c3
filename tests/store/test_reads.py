"""The store's typed reads: Feature and Exemplar records, targeted reads, and the named queries that
replaced SQL in the stages."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from autointerp.records import Exemplar, Explanation, Feature, LLMCall, Rows, Score
from autointerp.store.database import SCHEMA_VERSION, Store
from autointerp.store.schema import MIGRATIONS

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def feature(run_id: str, index: int, **extra: object) -> Feature:
    values: dict[str, object] = {
        "run_id": run_id,
        "id": f"m/mlp.3/{index}",
        "model": "m",
        "hook": "mlp.3",
        "kind": "neuron",
        "idx": index,
        "max_activation": 2.0 + index,
        "mean_activation": 0.5,
        "density": 0.01,
        "tokens": 100,
        "dead": False,
        "window_max_histogram": [1, 2, 3],
        "firing_windows": 4,
        "nonfiring_windows": 2,
    }
    return Feature(**{**values, **extra})  # type: ignore[arg-type]


def exemplar(run_id: str, feature_id: str, kind: str, rank: int, split: str) -> Exemplar:
    return Exemplar(
        run_id=run_id,
        feature_id=feature_id,
        kind=kind,
        rank=rank,
        doc_id=rank,
        token_offset=8 * rank,
        token_ids=[1, 2],
        tokens=["a", "b"],
        activations=[0.0, 1.5],
        max_activation=1.5,
        split=split,
    )


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "reads.duckdb")
    store.migrate()
    features = [feature("r", 2), feature("r", 1), feature("r", 3, dead=True), feature("r", 4, skip_reason="few")]
    exemplars = [
        exemplar("r", "m/mlp.3/1", "top", 1, "explain"),
        exemplar("r", "m/mlp.3/1", "top", 0, "score"),
        exemplar("r", "m/mlp.3/1", "random", 0, "explain"),
        exemplar("r", "m/mlp.3/2", "top", 0, "explain"),
    ]
    store.write_collection("r", features, exemplars)
    store.write_collection("other", [feature("other", 1)], [])
    return store


def test_features_come_back_as_the_records_written(store: Store) -> None:
    features = store.features("r")
    assert [f.idx for f in features] == [1, 2, 3, 4]  # by hook and index
    assert features[0] == feature("r", 1)
    assert [f.live for f in features] == [True, True, False, False]
    assert store.feature("r", "m/mlp.3/2") == feature("r", 2)
    assert store.feature("r", "m/mlp.3/99") is None
    assert store.feature("other", "m/mlp.3/2") is None


def test_exemplars_by_split_and_feature(store: Store) -> None:
    mine = store.exemplars("r", "m/mlp.3/1")
    assert [(e.kind, e.rank) for e in mine] == [("random", 0), ("top", 0), ("top", 1)]
    assert mine[1] == exemplar("r", "m/mlp.3/1", "top", 0, "score")
    assert [e.split for e in store.exemplars("r", "m/mlp.3/1", split="explain")] == ["explain", "explain"]
    grouped = store.exemplars_by_feature("r", "explain")
    assert sorted(grouped) == ["m/mlp.3/1", "m/mlp.3/2"]
    assert all(isinstance(e, Exemplar) and e.split == "explain" for es in grouped.values() for e in es)


def test_from_row_ignores_unknown_columns_and_round_trips() -> None:
    row = {**feature("r", 1).to_row(), "a_column_added_later": 1}
    assert Feature.from_row(row) == feature("r", 1)
    old = {k: v for k, v in feature("r", 1).to_row().items() if k not in ("firing_windows", "skip_reason")}
    assert Feature.from_row(old).skip_reason is None and Feature.from_row(old).firing_windows is None
    e = exemplar("r", "f", "top", 0, "explain")
    assert Exemplar.from_row({**e.to_row(), "extra": 0}) == e


def test_explanation_reads(store: Store) -> None:
    first = Explanation("r", "m/mlp.3/1", "a", "local:m", "h", None, created_at=T0)
    second = Explanation("r", "m/mlp.3/1", "b", "local:m", "h", None, iteration=1, parent_id=first.id,
                         created_at=T0 + timedelta(seconds=1))  # fmt: skip
    imported = Explanation("r", "m/mlp.3/2", "c", "import:delphi", "h", None, created_at=T0)
    store.write_results(Rows([first, second, imported]))
    latest = store.latest_explanation("r", "m/mlp.3/1")
    assert latest is not None and latest["id"] == second.id
    assert store.latest_explanation("r", "m/mlp.3/4") is None
    assert store.explained_feature_ids("r") == {"m/mlp.3/1"}  # an imported one does not count
    assert store.explanation_ids("r") == {first.id, second.id, imported.id}
    assert store.explanation_ids("other") == set()


def test_score_reads(store: Store) -> None:
    explanation = Explanation("r", "m/mlp.3/1", "a", "local:m", "h", None)
    windows = {"windows": [{"kind": "top", "rank": 0, "predicted": [0, 9]}]}
    rows = Rows([explanation])
    rows.add(Score("r", explanation.id, "simulation", "local:m", "correlation_all", 0.5, windows))
    rows.add(Score("r", explanation.id, "detection", "local:m", "detection_auroc", None, {"undefined": "x"}))
    store.write_results(rows)
    assert store.score_value("r", explanation.id, "correlation_all") == 0.5
    assert store.score_value("r", explanation.id, "detection_auroc") is None
    assert store.score_value("r", explanation.id, "no_such_metric") is None
    assert store.scored("r") == {(explanation.id, "simulation"), (explanation.id, "detection")}
    assert store.score_keys("r") == {
        (explanation.id, "simulation", "correlation_all"),
        (explanation.id, "detection", "detection_auroc"),
    }
    assert sorted(store.score_values("r"), key=str) == sorted(
        [(explanation.id, "correlation_all", 0.5, "local:m"), (explanation.id, "detection_auroc", None, "local:m")],
        key=str,
    )
    [(feature_id, text, model, details)] = store.simulation_predictions("r")
    assert (feature_id, text, model, json.loads(details)) == ("m/mlp.3/1", "a", "local:m", windows)


def test_call_reads(store: Store) -> None:
    def call(role: str, feature_id: str | None, explanation_id: str | None = None) -> LLMCall:
        return LLMCall("r", role, "local", "m", "h", {}, "ok", feature_id=feature_id, explanation_id=explanation_id)

    store.write_results(
        Rows([call("explain", "f1"), call("explain", "f1"), call("explain", "f2"), call("propose", "f1", "e1")])
    )
    assert store.call_counts("r", "explain") == {"f1": 2, "f2": 1}
    assert store.ids_with_calls("r", "explain", "feature_id") == {"f1", "f2"}
    assert store.ids_with_calls("r", "explain", "explanation_id") == set()  # NULLs left out
    assert store.ids_with_calls("r", "propose", "explanation_id") == {"e1"}
    assert store.has_calls("r", "e1", ("propose", "revise"))
    assert not store.has_calls("r", "e1", ("revise",))
    with pytest.raises(ValueError):
        store.ids_with_calls("r", "explain", "role; DROP TABLE runs")  # type: ignore[arg-type]


def test_run_exists(store: Store) -> None:
    store.start_run("r", {}, "h", "0", None)
    assert store.run_exists("r") and not store.run_exists("nope")


def test_an_old_file_is_carried_forward(tmp_path: Path) -> None:
    """A file at schema version 1 (no histogram, evidence or details columns) migrates to the current
    version, and its features read back as records with the later columns empty."""
    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ)")
        MIGRATIONS[0](con)
        con.execute("INSERT INTO schema_version VALUES (1, now())")
        con.execute(
            "INSERT INTO features VALUES ('r', 'm/mlp.3/1', 'm', 'mlp.3', 'neuron', 1, 2.0, 0.5, 0.1, 10, false)"
        )
    store = Store(path)
    assert store.check_schema() == 1
    assert store.migrate() == SCHEMA_VERSION
    [old] = store.features("r")
    assert (old.id, old.max_activation, old.window_max_histogram, old.skip_reason) == ("m/mlp.3/1", 2.0, None, None)
    assert old.live


def test_keep_only_features(store: Store) -> None:
    store.keep_only_features(["m/mlp.3/2", "m/mlp.3/404"])
    assert [f.id for f in store.features("r")] == ["m/mlp.3/2"]
    assert [f.id for f in store.features("other")] == []
