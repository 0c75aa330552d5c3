"""Stored positions of the feature list in each sort, so that any page of an unfiltered list, and a feature's
neighbours in it, are a range read instead of a sort of the run.

For each sort column whose values only a rebuild changes (not the review status) and each direction,
`feature_list_order` holds every index row's rank (its place in `ORDER BY column ASC|DESC NULLS LAST, pos`)
twice: under the sort's key k sorted by rank, and under -1-k sorted by position. Written in that order,
DuckDB's per-row-group minima and maxima let a range of ranks (or one position) read one or two row groups,
whatever the run's size. Page k of a sort is ranks k*per+1 .. (k+1)*per, then those rows of the index by
position (an ART index on `pos`); a feature's neighbours are the ranks beside its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import duckdb

ORDER = "feature_list_order"


def sort_key(ranked: Sequence[str], column: str, descending: bool) -> int:
    """Returns the number of the sort (`column`, direction) in `feature_list_order` (ranked: the ranked columns)."""
    return 2 * list(ranked).index(column) + int(descending)


def create_table(con: duckdb.DuckDBPyConnection) -> None:
    """Creates the (empty) order table."""
    con.execute(f"CREATE TABLE {ORDER} (scope VARCHAR, metric VARCHAR, sort_key INTEGER, rank BIGINT, pos BIGINT)")


def write_orders(con: duckdb.DuckDBPyConnection, index: str, scope: str, metric: str, ranked: Sequence[str]) -> None:
    """Replaces the order rows of (scope, metric): for each ranked column and direction, the index rows' ranks
    sorted by rank (key k) and again sorted by position (key -1-k), each from the index's narrow columns."""
    con.execute(f"DELETE FROM {ORDER} WHERE scope = ? AND metric = ?", [scope, metric])
    for column in ranked:
        for descending in (False, True):
            key = sort_key(ranked, column, descending)
            con.execute(
                f"CREATE OR REPLACE TEMP TABLE _ranks AS SELECT pos, row_number() OVER "
                f"(ORDER BY {column} {'DESC' if descending else 'ASC'} NULLS LAST, pos) AS rank "
                f"FROM {index} WHERE scope = ? AND metric = ?",
                [scope, metric],
            )
            for stored, by in ((key, "rank"), (-1 - key, "pos")):
                con.execute(
                    f"INSERT INTO {ORDER} SELECT ?, ?, ?, rank, pos FROM _ranks ORDER BY {by}", [scope, metric, stored]
                )
    con.execute("DROP TABLE IF EXISTS _ranks")


def rank_of(con: duckdb.DuckDBPyConnection, scope: str, metric: str, key: int, pos: int) -> int | None:
    """Returns the rank of index position `pos` in sort `key`; None when the list has no such position."""
    found = con.execute(
        f"SELECT rank FROM {ORDER} WHERE scope = ? AND metric = ? AND sort_key = ? AND pos = ?",
        [scope, metric, -1 - key, pos],
    ).fetchall()
    return int(found[0][0]) if found else None


def positions(
    con: duckdb.DuckDBPyConnection,
    scope: str,
    metric: str,
    key: int,
    first: int,
    last: int,
) -> list[int]:
    """Returns the index positions at ranks `first`..`last` (1-based, inclusive) of sort `key`, in rank order."""
    if last < first:
        return []
    found = con.execute(
        f"SELECT pos FROM {ORDER} WHERE scope = ? AND metric = ? AND sort_key = ? AND rank BETWEEN ? AND ? "
        "ORDER BY rank",
        [scope, metric, key, max(1, first), last],
    ).fetchall()
    return [int(r[0]) for r in found]
