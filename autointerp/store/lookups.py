"""Point lookups of one feature: the indexes that let the review app's feature page read what is stored about a
feature without scanning the run, and the reads that use them.

DuckDB answers `column = value` and `column = ANY(list)` from an ART index; a read of one feature first finds
its explanations (`explanations_by_feature`), then everything keyed by explanation id through `= ANY(ids)`, and
its exemplars' windows by their keys (`exemplar_windows_by_key`), so no query of the page grows with the run.
The indexes cost about 200 bytes per feature at the default sampling (most of it the exemplar rows').

A later migration that ALTERs one of these tables must drop its index first and create it again after
(DuckDB refuses to alter a table that an index depends on).
"""

from __future__ import annotations

from typing import Any

import duckdb

from autointerp.store.exemplar_windows import EXEMPLAR_COLUMNS

FEATURE_INDEXES = (
    ("features_by_id", "features", "id"),
    ("explanations_by_feature", "explanations", "feature_id"),
    ("exemplar_rows_by_feature", "exemplar_rows", "feature_id"),
    ("exemplar_windows_by_key", "exemplar_windows", "window_key"),
    ("reviews_by_explanation", "reviews", "explanation_id"),
    ("experiments_by_explanation", "experiments", "explanation_id"),
    ("llm_calls_by_feature", "llm_calls", "feature_id"),
    ("llm_calls_by_explanation", "llm_calls", "explanation_id"),
    ("neighbours_by_feature", "neighbours", "feature_id"),
    ("output_evidence_by_feature", "output_evidence", "feature_id"),
    ("feature_scores_by_feature", "feature_scores", "feature_id"),
)
"""(index, table, column) of every index a feature page's reads use (`scores_by_explanation` exists already)."""


def create_feature_indexes(con: duckdb.DuckDBPyConnection) -> None:
    """Creates the indexes of FEATURE_INDEXES that do not exist yet."""
    for name, table, column in FEATURE_INDEXES:
        con.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({column})")


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    cursor = con.execute(sql, params)
    names = [d[0] for d in cursor.description or []]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def feature_exemplars(con: duckdb.DuckDBPyConnection, feature_id: str) -> list[dict[str, Any]]:
    """Returns one feature's exemplars (every run) as `exemplars` rows, ordered by run, kind (descending) and
    rank: the feature's rows by index, then their windows by key (the view's join would scan the windows)."""
    rows = _rows(
        con,
        "SELECT * FROM exemplar_rows WHERE feature_id = ? ORDER BY run_id, kind DESC, rank",
        [feature_id],
    )
    keys = sorted({r["window_key"] for r in rows if r["window_key"] is not None})
    windows: dict[tuple[str, int], dict[str, Any]] = {}
    if keys:
        for w in _rows(con, "SELECT * FROM exemplar_windows WHERE window_key = ANY(?::UBIGINT[])", [keys]):
            windows[(w["run_id"], w["window_key"])] = w
    out = []
    for r in rows:
        window = windows.get((r["run_id"], r["window_key"]), {})
        joined = {**r, "token_ids": window.get("token_ids"), "tokens": window.get("tokens")}
        out.append({c: joined[c] for c in EXEMPLAR_COLUMNS})
    return out


def feature_record(con: duckdb.DuckDBPyConnection, feature_id: str) -> dict[str, list[dict[str, Any]]]:
    """Returns everything stored about one feature, across runs, table by table (features, explanations,
    exemplars, scores, experiments, llm_calls, nearest, outputs, feature_scores, reviews), each by index."""
    explanations = _rows(
        con,
        "SELECT * FROM explanations WHERE feature_id = ? ORDER BY created_at DESC, iteration DESC",
        [feature_id],
    )
    ids = [e["id"] for e in explanations]
    by_explanation = "explanation_id = ANY(?::VARCHAR[])"
    return {
        "features": _rows(
            con,
            "SELECT * FROM (SELECT f.*, (SELECT r.created_at FROM runs r WHERE r.id = f.run_id) AS run_created_at "
            "FROM features f WHERE f.id = ?) WHERE run_created_at IS NOT NULL ORDER BY run_created_at DESC",
            [feature_id],
        ),
        "explanations": explanations,
        "exemplars": feature_exemplars(con, feature_id),
        "scores": _rows(con, f"SELECT * FROM scores WHERE {by_explanation} ORDER BY metric", [ids]),
        "experiments": _rows(con, f"SELECT * FROM experiments WHERE {by_explanation} ORDER BY created_at", [ids]),
        "llm_calls": _rows(
            con,
            "SELECT * FROM (SELECT * FROM llm_calls WHERE feature_id = ? UNION "
            f"SELECT * FROM llm_calls WHERE {by_explanation}) ORDER BY created_at",
            [feature_id, ids],
        ),
        "nearest": _rows(  # its neighbours by cosine and co-occurrence (`autointerp.neighbours`)
            con, "SELECT * FROM neighbours WHERE feature_id = ? ORDER BY run_id, kind, rank", [feature_id]
        ),
        "outputs": _rows(  # what it writes: direct-path and steering tokens (`autointerp.outputs`)
            con, "SELECT * FROM output_evidence WHERE feature_id = ? ORDER BY run_id", [feature_id]
        ),
        "feature_scores": _rows(  # explanation-free scores (the intruder test)
            con, "SELECT * FROM feature_scores WHERE feature_id = ? ORDER BY run_id, metric", [feature_id]
        ),
        "reviews": _rows(con, f"SELECT * FROM reviews WHERE {by_explanation} ORDER BY created_at DESC", [ids]),
    }
