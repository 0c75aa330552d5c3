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
from typing import Any

import duckdb

ORDER = "feature_list_order"

WALK_LIMIT = 64 + 512 + 4096 + 32768
"""How many ranks a feature page walks in chunks for the next unreviewed feature before asking the index."""


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


def indexed_rows(
    con: duckdb.DuckDBPyConnection,
    index: str,
    scope: str,
    metric: str,
    column: str,
    values: Sequence[Any],
    columns: str,
) -> list[dict[str, Any]]:
    """Returns `columns` (less scope, metric and search text) of the rows of (scope, metric) of the list's
    `index` whose `column` (`pos` or `feature_id`, each with an ART index) is one of `values`. The lookup is
    the query's only condition, as DuckDB answers only such a query from the index; rows of other scopes are
    dropped here."""
    if not values:
        return []
    cast = "BIGINT[]" if column == "pos" else "VARCHAR[]"
    cursor = con.execute(
        f"SELECT {columns}, scope AS _scope, metric AS _metric FROM {index} WHERE {column} = ANY(?::{cast})",
        [list(values)],
    )
    names = [d[0] for d in cursor.description or []]
    return [
        {k: v for k, v in zip(names, row, strict=True) if k not in _DROPPED}
        for row in cursor.fetchall()
        if row[names.index("_scope")] == scope and row[names.index("_metric")] == metric
    ]


_DROPPED = ("_scope", "_metric", "scope", "metric", "search_text")


def neighbours(
    con: duckdb.DuckDBPyConnection, index: str, scope: str, metric: str, key: int, feature_id: str
) -> dict[str, str | None] | None:
    """Returns the previous, next and next unreviewed feature ids around `feature_id` in the unfiltered list
    of sort `key`, by its stored rank (a feature not listed: no previous, the list's first as next); None when
    the next unreviewed feature is further than WALK_LIMIT ranks away (the caller then asks the index)."""
    here = indexed_rows(con, index, scope, metric, "feature_id", [feature_id], "pos")
    rank = (rank_of(con, scope, metric, key, int(here[0]["pos"])) or 0) if here else 0

    def ids(at: list[int], unreviewed: bool = False) -> list[str]:
        """Returns the feature ids at positions `at`, in that order (only unreviewed ones when asked)."""
        found = indexed_rows(con, index, scope, metric, "pos", at, "pos, feature_id, status")
        by_pos = {r["pos"]: r["feature_id"] for r in found if not unreviewed or r["status"] == "unreviewed"}
        return [by_pos[p] for p in at if p in by_pos]

    def ranked(r: int) -> str | None:
        found = ids(positions(con, scope, metric, key, r, r))
        return found[0] if found else None

    def first_unreviewed(start: int) -> str | bool | None:
        """The first unreviewed feature from rank `start` on (not this one); False when none is within
        WALK_LIMIT ranks (read in chunks of growing size)."""
        size, walked = 64, 0
        while walked < WALK_LIMIT:
            begin = start + walked
            found = positions(con, scope, metric, key, begin, begin + size - 1)
            if not found:
                return None
            unreviewed = [f for f in ids(found, unreviewed=True) if f != feature_id]
            if unreviewed:
                return unreviewed[0]
            walked, size = walked + size, size * 8
        return False

    later = first_unreviewed(rank + 1)
    if later is None and rank:
        later = first_unreviewed(1)  # from the list's start, as the index query does
    if later is False:
        return None
    return {
        "prev": ranked(rank - 1) if rank > 1 else None,
        "next": ranked(rank + 1),
        "next_unreviewed": later if isinstance(later, str) else None,
    }
