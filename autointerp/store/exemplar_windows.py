"""Exemplars stored at scale: each distinct window's tokens once per run, not once per feature that kept it.

A run's features keep their exemplars from one corpus, so the same window comes back for many features.
`exemplar_windows` holds each window's token ids and strings once per run, keyed by a hash of both;
`exemplar_rows` holds what is the feature's own (kind, rank, split, activations) and that key, without a
primary key index (the index cost more bytes than the rows). `scores` loses its indexes for the same reason
(`drop_score_indexes`). `exemplars` is a view joining the two with the
columns and order of the table it replaces, so every reader is unchanged; every write of `exemplars` goes
through `insert_exemplars`.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb
import pyarrow as pa

EXEMPLAR_COLUMNS = (
    "run_id",
    "feature_id",
    "kind",
    "rank",
    "doc_id",
    "token_offset",
    "token_ids",
    "tokens",
    "activations",
    "max_activation",
    "split",
)
"""The columns of `exemplars`, in order."""

KEY_SQL = "hash(token_ids, tokens)"
"""A window's key: the hash of its token ids and strings (a run imported without ids, or with placeholder ids,
still keeps windows with other text apart)."""

_INCOMING, _KEYED = "_incoming_exemplars", "_keyed_exemplars"
"""Names under which an Arrow write's rows are registered: as given, then with their keys."""


VIEW_SQL = """
    CREATE VIEW exemplars AS
    SELECT r.run_id, r.feature_id, r.kind, r.rank, r.doc_id, r.token_offset, w.token_ids, w.tokens,
           r.activations, r.max_activation, r.split
    FROM exemplar_rows r LEFT JOIN exemplar_windows w ON w.run_id = r.run_id AND w.window_key = r.window_key
"""


def create_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Creates `exemplar_windows` and `exemplar_rows` (empty)."""
    con.execute("""
        CREATE TABLE exemplar_windows (run_id VARCHAR, window_key UBIGINT, token_ids INTEGER[], tokens VARCHAR[]);
        CREATE TABLE exemplar_rows (
            run_id VARCHAR, feature_id VARCHAR, kind VARCHAR, rank INTEGER, doc_id BIGINT, token_offset BIGINT,
            window_key UBIGINT, activations FLOAT[], max_activation FLOAT, split VARCHAR
        );
    """)


def insert_exemplars(con: duckdb.DuckDBPyConnection, rows: str | pa.Table) -> int:
    """Inserts `rows` (an Arrow table, or the name of a table, with the columns of `exemplars`): windows not
    stored yet for their run, then the rows; returns how many rows. A column it lacks (e.g. token ids of an
    imported run) is stored as NULL.

    Hashing a window's strings is most of its key's cost, and both inserts need the key: an Arrow write's keys
    are hashed once, in row order, and carried as a column (both inserts stay parallel); a table is hashed twice."""
    if isinstance(rows, str):
        cursor = con.execute(f"SELECT * FROM {rows} LIMIT 0")
        relation = _all_columns(rows, [d[0] for d in cursor.description or []])
        cursor.fetchall()
        con.execute(windows_insert_sql(relation, KEY_SQL))
        counted = con.execute(rows_insert_sql(relation, key=KEY_SQL)).fetchall()
        return int(counted[0][0]) if counted else 0
    con.register(_INCOMING, rows)
    try:
        incoming = _all_columns(_INCOMING, rows.column_names)
        keys = con.sql(f"SELECT {KEY_SQL} AS k FROM {incoming}").to_arrow_table().column(0)
    finally:
        con.unregister(_INCOMING)
    con.register(_KEYED, rows.append_column("window_key", keys))
    try:
        relation = _all_columns(_KEYED, rows.column_names, "window_key")
        con.execute(windows_insert_sql(relation))
        counted = con.execute(rows_insert_sql(relation)).fetchall()
    finally:
        con.unregister(_KEYED)
    return int(counted[0][0]) if counted else 0


def _all_columns(relation: str, present: Sequence[str], *extra: str) -> str:
    """Returns `relation` (whose columns are `present`), or a query over it with NULL for each column of
    `exemplars` it lacks (then `extra`)."""
    if set(present).issuperset(EXEMPLAR_COLUMNS):
        return relation
    chosen = ", ".join([*(c if c in present else f"NULL AS {c}" for c in EXEMPLAR_COLUMNS), *extra])
    return f"(SELECT {chosen} FROM {relation})"


def windows_insert_sql(relation: str, key: str = "window_key") -> str:
    """Returns the statement that stores the windows of `relation` not stored yet for their run, once each,
    under their key (`key`, its SQL: by default the relation's `window_key` column)."""
    return f"""
        INSERT INTO exemplar_windows
        SELECT run_id, window_key, any_value(token_ids), any_value(tokens) FROM (
            SELECT run_id, {key} AS window_key, token_ids, tokens FROM {relation}
        ) n
        WHERE NOT EXISTS (
            SELECT 1 FROM exemplar_windows w WHERE w.run_id = n.run_id AND w.window_key = n.window_key
        )
        GROUP BY run_id, window_key
    """


def rows_insert_sql(relation: str, table: str = "exemplar_rows", key: str = "window_key") -> str:
    """Returns the statement that stores the rows of `relation` in `table` with their window's key (`key`, its
    SQL: by default the relation's `window_key` column; the write-rate benchmark swaps in a constant)."""
    return f"""
        INSERT INTO {table}
        SELECT run_id, feature_id, kind, rank, doc_id, token_offset, {key}, activations, max_activation, split
        FROM {relation}
    """


def delete_run(con: duckdb.DuckDBPyConnection, run_id: str) -> None:
    """Deletes a run's exemplars and windows."""
    con.execute("DELETE FROM exemplar_rows WHERE run_id = ?", [run_id])
    con.execute("DELETE FROM exemplar_windows WHERE run_id = ?", [run_id])


def migrate_exemplars(con: duckdb.DuckDBPyConnection) -> None:
    """Moves the `exemplars` table's rows into the window and row tables and puts the view in its place."""
    create_tables(con)
    insert_exemplars(con, "exemplars")
    con.execute("DROP TABLE exemplars")
    con.execute(VIEW_SQL)


def drop_score_indexes(con: duckdb.DuckDBPyConnection) -> None:
    """Rebuilds `scores` with its rows and columns but without the primary key and unique indexes: at a
    dozen metrics per explanation they took three times the bytes of the scores themselves, and no write
    relies on them (a part's rows are matched by id when ingested; reads take each metric's latest). A plain
    index on `explanation_id` (a tenth of their bytes) keeps a feature page's score lookup off a scan."""
    con.execute("CREATE TABLE _scores_rebuilt AS SELECT * FROM scores")
    con.execute("DROP TABLE scores")
    con.execute("ALTER TABLE _scores_rebuilt RENAME TO scores")
    con.execute("CREATE INDEX scores_by_explanation ON scores (explanation_id)")  # a feature page's scores
