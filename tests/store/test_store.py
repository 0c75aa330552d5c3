from pathlib import Path

import duckdb
import pytest

from autointerp.store.database import SCHEMA_VERSION, Store


def test_migrate_creates_the_tables_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "a.duckdb")
    assert store.migrate() == SCHEMA_VERSION
    assert store.migrate() == SCHEMA_VERSION
    tables = {r["table_name"] for r in store.query("SELECT table_name FROM information_schema.tables")}
    assert {
        "runs",
        "features",
        "exemplars",
        "explanations",
        "scores",
        "experiments",
        "llm_calls",
        "reviews",
        "schema_version",
    } <= tables
    assert store.query("SELECT count(*) AS n FROM schema_version")[0]["n"] == SCHEMA_VERSION


def test_bulk_rows_round_trip_with_lists(tmp_path: Path) -> None:
    store = Store(tmp_path / "b.duckdb")
    store.migrate()
    rows = [
        {
            "run_id": "r",
            "feature_id": f"f{i}",
            "kind": "top",
            "rank": 0,
            "doc_id": i,
            "token_offset": 0,
            "token_ids": [1, 2],
            "tokens": ["a", "b"],
            "activations": [0.5, 1.5],
            "max_activation": 1.5,
            "split": "explain",
        }
        for i in range(1000)
    ]
    store.write_results({"exemplars": rows})
    back = store.exemplars("r", "f7")
    assert back[0].tokens == ["a", "b"] and back[0].activations == [0.5, 1.5]
    assert store.query("SELECT count(*) AS n FROM exemplars")[0]["n"] == 1000


def test_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.duckdb")
    store.migrate()
    good = {"id": "e1", "run_id": "r", "feature_id": "f", "iteration": 0, "text": "x"}
    with pytest.raises(duckdb.Error):
        store.write_results({"explanations": [good], "scores": [{"no_such_column": 1}]})
    assert store.explanations("r") == []


def test_start_run_reports_a_resume(tmp_path: Path) -> None:
    store = Store(tmp_path / "d.duckdb")
    store.migrate()
    assert store.start_run("r", {"a": 1}, "h", "0", None) is False
    store.finish_run("r", "failed", "boom")
    assert store.start_run("r", {"a": 1}, "h", "0", None) is True
    assert store.runs()[0]["status"] == "running"
