"""Point lookups of one feature (issue 26): the migration creates the indexes, every read of a feature page is
answered from an index (not a scan of the run), and what it returns equals a plain reading of the tables."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import duckdb
import pytest

from autointerp.store.database import Store, now
from autointerp.store.lookups import FEATURE_INDEXES, feature_exemplars, feature_record
from benchmarks.scale_fixture import RUN_ID, build

FEATURES = 40


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scale fixture of 40 features with a second explanation, calls and neighbours for one of them."""
    path = tmp_path_factory.mktemp("lookups") / "scale.duckdb"
    build(path, FEATURES, corpus_windows=64, quiet=True)
    store = Store(path)
    feature = store.query("SELECT id FROM features ORDER BY idx, id LIMIT 1 OFFSET 7")[0]["id"]
    explanation = store.query("SELECT id FROM explanations WHERE feature_id = ? LIMIT 1", [feature])[0]["id"]
    with store.transaction() as con:
        for n, (feature_id, explanation_id) in enumerate(((feature, None), (None, explanation), (None, "other"))):
            con.execute(
                "INSERT INTO llm_calls (id, run_id, feature_id, explanation_id, role, created_at) "
                "VALUES (?, ?, ?, ?, 'explain', ?)",
                [f"call-{n}", RUN_ID, feature_id, explanation_id, now()],
            )
        con.execute("INSERT INTO neighbours VALUES (?, ?, 'cosine', 1, 'other', 0.5, NULL, true)", [RUN_ID, feature])
        con.execute(
            "INSERT INTO reviews VALUES (?, ?, 'note', NULL, 'ann', 'see this', ?)",
            [str(uuid.uuid4()), explanation, now()],
        )
    return path


def _plain(con: duckdb.DuckDBPyConnection, feature_id: str) -> dict[str, list[dict[str, Any]]]:
    """Returns the feature's record read the plain way (the `exemplars` view, subqueries by feature)."""

    def rows(sql: str, params: list[Any]) -> list[dict[str, Any]]:
        cursor = con.execute(sql, params)
        names = [d[0] for d in cursor.description or []]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    ids = "SELECT id FROM explanations WHERE feature_id = ?"
    return {
        "features": rows(
            "SELECT f.*, r.created_at AS run_created_at FROM features f JOIN runs r ON r.id = f.run_id "
            "WHERE f.id = ? ORDER BY r.created_at DESC",
            [feature_id],
        ),
        "explanations": rows(
            "SELECT * FROM explanations WHERE feature_id = ? ORDER BY created_at DESC, iteration DESC", [feature_id]
        ),
        "exemplars": rows(
            "SELECT * FROM exemplars WHERE feature_id = ? ORDER BY run_id, kind DESC, rank", [feature_id]
        ),
        "scores": rows(f"SELECT * FROM scores WHERE explanation_id IN ({ids}) ORDER BY metric", [feature_id]),
        "experiments": rows(f"SELECT * FROM experiments WHERE explanation_id IN ({ids})", [feature_id]),
        "llm_calls": rows(
            f"SELECT * FROM llm_calls WHERE feature_id = ? OR explanation_id IN ({ids}) ORDER BY created_at",
            [feature_id, feature_id],
        ),
        "nearest": rows("SELECT * FROM neighbours WHERE feature_id = ? ORDER BY run_id, kind, rank", [feature_id]),
        "outputs": rows("SELECT * FROM output_evidence WHERE feature_id = ?", [feature_id]),
        "feature_scores": rows("SELECT * FROM feature_scores WHERE feature_id = ?", [feature_id]),
        "reviews": rows(
            f"SELECT * FROM reviews WHERE explanation_id IN ({ids}) ORDER BY created_at DESC", [feature_id]
        ),
    }


def test_a_feature_record_equals_the_plain_reading(db: Path) -> None:
    store = Store(db)
    with store.connect(read_only=True) as con:
        features = [r[0] for r in con.execute("SELECT id FROM features ORDER BY idx, id").fetchall()]
        for feature_id in (features[0], features[7], features[-1], "no such feature"):
            record, plain = feature_record(con, feature_id), _plain(con, feature_id)
            assert record.keys() == plain.keys()
            for table in record:  # the same rows; in the same order where the page shows the order
                assert sorted(map(str, record[table])) == sorted(map(str, plain[table])), (feature_id, table)
            for table in ("features", "explanations", "exemplars", "nearest", "reviews"):
                assert record[table] == plain[table], (feature_id, table)
        record = feature_record(con, features[7])
    assert len(record["exemplars"]) == 20 and all(e["tokens"] for e in record["exemplars"])
    assert len(record["llm_calls"]) == 2 and len(record["nearest"]) == 1 and record["reviews"]


def test_each_read_of_a_feature_is_an_index_scan(db: Path) -> None:
    """Every table a feature page reads is searched through an index (the plans say so), whatever its size."""
    store = Store(db)
    with store.connect(read_only=True) as con:
        indexes = {r[0] for r in con.execute("SELECT index_name FROM duckdb_indexes()").fetchall()}
        assert {name for name, _table, _column in FEATURE_INDEXES} <= indexes
        feature_id = con.execute("SELECT id FROM features LIMIT 1").fetchall()[0][0]
        explanation = con.execute("SELECT id FROM explanations WHERE feature_id = ?", [feature_id]).fetchall()[0][0]
        keys = [
            r[0]
            for r in con.execute("SELECT window_key FROM exemplar_rows WHERE feature_id = ?", [feature_id]).fetchall()
        ]
        for table, column, value in (
            ("features", "id", feature_id),
            ("explanations", "feature_id", feature_id),
            ("exemplar_rows", "feature_id", feature_id),
            ("neighbours", "feature_id", feature_id),
            ("llm_calls", "feature_id", feature_id),
        ):
            plan = con.execute(f"EXPLAIN ANALYZE SELECT * FROM {table} WHERE {column} = ?", [value]).fetchall()[0][1]
            assert "Index Scan" in plan, table
        for table, column, values, cast in (
            ("scores", "explanation_id", [explanation], "VARCHAR[]"),
            ("reviews", "explanation_id", [explanation], "VARCHAR[]"),
            ("exemplar_windows", "window_key", keys, "UBIGINT[]"),
        ):
            plan = con.execute(
                f"EXPLAIN ANALYZE SELECT * FROM {table} WHERE {column} = ANY(?::{cast})", [values]
            ).fetchall()
            assert "Index Scan" in plan[0][1], table
        assert [e["rank"] for e in feature_exemplars(con, feature_id)] == [
            r[0]
            for r in con.execute(
                "SELECT rank FROM exemplars WHERE feature_id = ? ORDER BY run_id, kind DESC, rank", [feature_id]
            ).fetchall()
        ]
