"""The review app's feature list: filters, sort and page (`FeatureQuery`), one page of it (`FeaturePage`),
and the queries over it (`FeatureListQueries`, part of `ReviewQueries`): the page, the features a bulk
action reviews, a feature's neighbours in the list, and the values the list can be filtered by.

Every query reads the list's index (`autointerp.review.list_index`): one row per listed feature with the
columns shown, filtered and sorted on, so a page costs the same at ten thousand features as at a million.
A feature's status is its current explanation's latest decision (`DECIDED_SQL`, `STATUS_SQL`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import duckdb

from autointerp.errors import StoreError
from autointerp.metric_names import MAIN_METRIC
from autointerp.review import list_order
from autointerp.review.list_index import (
    ALL_RUNS,
    DECIDED_SQL,
    INDEX,
    LIST_TEXT_CHARS,
    STATUS_SQL,
    WORDS,
    ListIndex,
    confidence_details,
    query_words,
)
from autointerp.score.confidence import metric_confidence
from autointerp.store.database import Store

__all__ = ["DECIDED_SQL", "FEATURE_SORTS", "LIST_TEXT_CHARS", "STATUS_SQL", "FeatureListQueries", "FeatureQuery"]


@dataclass(frozen=True)
class ListSort:
    """A column the feature list sorts on: an index column, or the latest value of another `metric` of each
    current explanation (which the index then holds in `column`)."""

    column: str
    descending_first: bool = False
    """The list's first click sorts this way (best first for scores)."""
    metric: str | None = None
    per_feature: bool = False
    """`metric` is an explanation-free score of the feature (`feature_scores`, e.g. the intruder test's)."""


FEATURE_SORTS: dict[str, ListSort] = {
    "score": ListSort("score", descending_first=True),
    "feature": ListSort("feature_id"),
    "index": ListSort("idx"),
    "layer": ListSort("hook"),
    "density": ListSort("density"),
    "status": ListSort("status"),
    "run": ListSort("run_id"),
    "disagreement": ListSort("disagreement", descending_first=True),
    "intruder": ListSort("intruder", descending_first=True, metric="intruder_accuracy", per_feature=True),
}
"""What the feature list can be sorted by (the only strings that reach ORDER BY). A sort on another metric is
one line: `"name": ListSort("column_name", descending_first=True, metric="the_metric")` (with
`per_feature=True` for a metric of `feature_scores`, e.g. the intruder test's accuracy)."""

SEARCH_PLAN = "SET disabled_optimizers = 'build_side_probe_side'"
"""Set on a search's (short) connection: DuckDB then hashes a search's word matches and streams the index
past them, instead of hashing the whole index (it misjudges how few rows a word range holds): 4-5x faster."""

PLAIN_WHERE = "scope = ? AND metric = ?"
"""The index condition of an unfiltered list (`FeatureListQueries._where` adds to it)."""

CHANCE_FILTERS = ("only", "hide")
"""The list's chance-level filter: only the explanations at chance (`score.confidence.like_chance`: not
distinguishable from their distractor, or scoring at or below 0), or all but them."""


class UnknownListScope(StoreError):
    """A list query names a run or a metric the store does not hold (the app answers 400)."""


@dataclass
class FeatureQuery:
    """Filters, sort and page of the review app's feature list."""

    metric: str = MAIN_METRIC
    run_id: str | None = None
    hook: str | None = None
    kind: str | None = None
    status: str | None = None
    search: str | None = None
    min_score: float | None = None
    max_score: float | None = None
    min_disagreement: float | None = None
    """Keep features whose scorers disagree at least this much (0..1, see `ReviewQueries`)."""
    has_note: bool = False
    """Keep features with a reviewer's note on any of their explanations."""
    experiments_requested: bool = False
    """Keep features a reviewer asked more experiments for."""
    chance: str | None = None
    """`only`: keep explanations whose headline score is at chance (not distinguishable from its distractor's,
    or at or below 0); `hide`: leave them out (scores without a confidence are never chance-level)."""
    sort: str = "score"
    descending: bool = True
    limit: int = 50
    offset: int = 0
    after: int | None = None
    """Keyset paging: the page starts after the listed row at this index position (`pos` of the previous
    page's last row); `offset` is then ignored. Deep pages cost what the first one does."""
    before: int | None = None
    """Keyset paging backwards: the page ends before the row at this position (the next page's first row)."""

    def __post_init__(self) -> None:
        if self.sort not in FEATURE_SORTS:
            raise StoreError(f"cannot sort by {self.sort!r}; choose one of {', '.join(FEATURE_SORTS)}")
        if self.chance is not None and self.chance not in CHANCE_FILTERS:
            raise StoreError(f"chance must be one of {', '.join(CHANCE_FILTERS)}, not {self.chance!r}")


@dataclass
class FeaturePage:
    """One page of the feature list."""

    rows: list[dict[str, Any]]
    total: int
    """Features matching the filters (all pages)."""
    reviewable: int
    """Of those, the ones with an explanation (what a bulk action would review)."""
    stale: bool = False
    """The list is the index as built before a run in progress wrote its latest rows (it updates at the run's end)."""


class FeatureListQueries:
    """The feature list's queries over one store, answered from the list's index.

    Scorer disagreement of an explanation: each scorer's headline metric (the main metric, else an
    AUROC, else the first by name) is turned into a percentile among the listed explanations'
    values of that metric; the disagreement is the largest minus the smallest percentile (0: the
    scorers rank it alike, 1: one ranks it best and another worst). It needs two scorers.
    """

    store: Store

    @property
    def list_index(self) -> ListIndex:
        """Returns the index over the sorts now in FEATURE_SORTS (a sort added there adds its column)."""
        return ListIndex(
            {s.column: (s.metric, s.per_feature) for s in FEATURE_SORTS.values() if s.metric},
            [s.column for s in FEATURE_SORTS.values()],
        )

    @contextmanager
    def _index(
        self, query: FeatureQuery, serve_stale: bool = True
    ) -> Iterator[tuple[duckdb.DuckDBPyConnection, str, bool]]:
        """Yields one read-only connection, the query's index scope and whether the index is stale, built first
        when missing or stale. While a run is writing the store (`ListIndex.run_writing`) an existing index is
        served as built (stale: True) unless `serve_stale` is off: the run rebuilds it at its end, and
        rebuilding it for every page while rows keep arriving would cost a minute of CPU per page at 1M."""
        scope = query.run_id or ALL_RUNS
        with self.store.connect(read_only=True) as con:
            current = self.list_index.is_current(con, scope, query.metric)
            stale = (
                not current
                and serve_stale
                and self.list_index.exists(con, scope, query.metric)
                and self.list_index.run_writing(con)
            )
            if current or stale:
                if query.search:
                    con.execute(SEARCH_PLAN)
                yield con, scope, stale
                return
            _check_scope(con, query)  # no index is built (written) for a run or metric that is not there
        with self.store.transaction() as con:
            if not self.list_index.is_current(con, scope, query.metric):
                self.list_index.build(con, scope, query.metric)
        with self.store.connect(read_only=True) as con:
            if query.search:
                con.execute(SEARCH_PLAN)
            yield con, scope, False

    def check_index(self, progress: Callable[[str], None] | None = None) -> bool:
        """Drops index scopes whose content checksum differs from the store (rows edited in place), then
        builds the default list's index when it is missing or stale (so the app's first page does not),
        telling `progress` what it does. Returns True when it built the index."""
        say = progress or (lambda _line: None)
        with self.store.transaction() as con:
            self.list_index.check_content(con)
        query = FeatureQuery()
        with self.store.connect(read_only=True) as con:
            if self.list_index.is_current(con, ALL_RUNS, query.metric):
                say("feature list index: up to date")
                return False
            features = int((con.execute("SELECT count(DISTINCT id) FROM features").fetchone() or (0,))[0])
        say(f"building the feature list index over {features:,} features (reviews then update it in place) ...")
        began, cpu = time.perf_counter(), time.process_time()
        with self._index(query, serve_stale=False):
            pass
        wall, cpu = time.perf_counter() - began, time.process_time() - cpu
        say(f"feature list index built in {wall:.1f} s ({cpu:.1f} s of CPU)")
        return True

    def _where(self, query: FeatureQuery, scope: str) -> tuple[str, list[Any]]:
        """Returns the WHERE condition over the index (alias-free) and its parameters."""
        sql = PLAIN_WHERE
        params: list[Any] = [scope, query.metric]
        for column, value in (("hook", query.hook), ("kind", query.kind), ("status", query.status)):
            if value:
                sql += f" AND {column} = ?"
                params.append(value)
        if query.search:
            words = query_words(query.search)
            for word in words:
                sql += f" AND pos IN (SELECT pos FROM {WORDS} WHERE scope = ? AND word >= ? AND word < ?"
                sql += " AND starts_with(word, ?))"
                params += [scope, word, word + "\U0010ffff", word]
            if not words:  # punctuation only: the text itself
                sql += " AND contains(lower(search_text), lower(?))"
                params.append(query.search)
        for bound, limit in (
            ("score >=", query.min_score),
            ("score <=", query.max_score),
            ("disagreement >=", query.min_disagreement),
        ):
            if limit is not None:
                sql += f" AND {bound} ?"
                params.append(limit)
        if query.has_note:
            sql += " AND notes > 0"
        if query.experiments_requested:
            sql += " AND experiment_requests > 0"
        if query.chance == "only":
            sql += " AND chance"
        elif query.chance == "hide":
            sql += " AND NOT chance"
        return sql, params

    @staticmethod
    def _order(query: FeatureQuery, reverse: bool = False) -> str:
        descending = query.descending != reverse
        column = FEATURE_SORTS[query.sort].column
        tail = "pos DESC" if reverse else "pos"
        return f"{column} {'DESC' if descending else 'ASC'} NULLS {'FIRST' if reverse else 'LAST'}, {tail}"

    def _keyset(
        self, con: duckdb.DuckDBPyConnection, query: FeatureQuery, scope: str, pos: int, forward: bool
    ) -> tuple[str, list[Any]] | None:
        """Returns the condition keeping the rows after (`forward`) or before the row at index position `pos`
        in the list's order, and its parameters; None when the index has no such row."""
        column = FEATURE_SORTS[query.sort].column
        found = con.execute(
            f"SELECT {column} FROM {INDEX} WHERE scope = ? AND metric = ? AND pos = ?", [scope, query.metric, pos]
        ).fetchall()
        if not found:
            return None
        value = found[0][0]
        if value is None:
            if forward:
                return f" AND {column} IS NULL AND pos > ?", [pos]
            return f" AND ({column} IS NOT NULL OR pos < ?)", [pos]
        ahead = "<" if query.descending == forward else ">"
        nulls = f" OR {column} IS NULL" if forward else ""
        tie = ">" if forward else "<"
        return f" AND ({column} {ahead} ? OR ({column} = ? AND pos {tie} ?){nulls})", [value, value, pos]

    def _ranked_key(self, query: FeatureQuery, where: str) -> int | None:
        """Returns the stored order's key of the query's sort when the list is unfiltered and the sort has
        stored ranks (`autointerp.review.list_order`); None otherwise (the list is sorted by the query)."""
        ranked = self.list_index.ranked
        column = FEATURE_SORTS[query.sort].column
        if where != PLAIN_WHERE or column not in ranked:
            return None
        return list_order.sort_key(ranked, column, query.descending)

    def _page_positions(self, con: duckdb.DuckDBPyConnection, query: FeatureQuery, scope: str) -> list[int]:
        """Returns the index positions of the query's page, in list order: a range of stored ranks for an
        unfiltered list in a ranked sort, else the sorted filter's positions (only `pos` and the sort column
        are read, whatever the offset)."""
        where, params = self._where(query, scope)
        anchor = query.after if query.after is not None else query.before
        key = self._ranked_key(query, where)
        if key is not None:
            rank = None if anchor is None else list_order.rank_of(con, scope, query.metric, key, anchor)
            if rank is None:
                first = query.offset + 1
            elif query.before is None:
                first = rank + 1
            else:
                first = max(1, rank - query.limit)
                return list_order.positions(con, scope, query.metric, key, first, rank - 1)
            return list_order.positions(con, scope, query.metric, key, first, first + query.limit - 1)
        keyset = None if anchor is None else self._keyset(con, query, scope, anchor, query.before is None)
        if keyset is None:
            found = con.execute(
                f"SELECT pos FROM {INDEX} WHERE {where} ORDER BY {self._order(query)} LIMIT ? OFFSET ?",
                [*params, query.limit, query.offset],
            ).fetchall()
            return [int(r[0]) for r in found]
        backwards = query.after is None
        found = con.execute(
            f"SELECT pos FROM {INDEX} WHERE {where}{keyset[0]} ORDER BY {self._order(query, reverse=backwards)} "
            "LIMIT ?",
            [*params, *keyset[1], query.limit],
        ).fetchall()
        listed = [int(r[0]) for r in found]
        return listed[::-1] if backwards else listed

    def feature_list(self, query: FeatureQuery) -> FeaturePage:
        """Returns one page of the feature list with the number of features matching the filters."""
        with self._index(query) as (con, scope, stale):
            where, params = self._where(query, scope)
            counts = _rows(con, f"SELECT count(*) AS n, count(explanation_id) AS r FROM {INDEX} WHERE {where}", params)
            listed = self._page_positions(con, query, scope)
            found = list_order.indexed_rows(con, INDEX, scope, query.metric, "pos", listed, "*")
        by_pos = {row["pos"]: row for row in found}
        rows = [by_pos[p] for p in listed if p in by_pos]
        for row in rows:
            details = confidence_details(row.pop("confidence_json"))
            row["confidence"] = metric_confidence(query.metric, details, row["score"])
        return FeaturePage(rows, int(counts[0]["n"]), int(counts[0]["r"]), stale)

    def bulk_targets(self, query: FeatureQuery, limit: int) -> list[dict[str, Any]]:
        """Returns (feature_id, explanation_id, status) of every listed feature with an explanation, in
        list order, at most `limit` of them (ignores the query's page)."""
        with self._index(query) as (con, scope, _):
            where, params = self._where(query, scope)
            return _rows(
                con,
                f"SELECT feature_id, explanation_id, status FROM {INDEX} WHERE {where} AND explanation_id IS NOT NULL "
                f"ORDER BY {self._order(query)} LIMIT ?",
                [*params, limit],
            )

    def feature_neighbours(self, query: FeatureQuery, feature_id: str) -> dict[str, str | None]:
        """Returns the previous, next and next unreviewed feature ids around `feature_id` in the list (a
        feature the list does not show: no previous, and the list's first as next)."""
        with self._index(query) as (con, scope, _):
            return self._neighbours(con, query, scope, feature_id)

    def _neighbours(
        self, con: duckdb.DuckDBPyConnection, query: FeatureQuery, scope: str, feature_id: str
    ) -> dict[str, str | None]:
        where, params = self._where(query, scope)
        key = self._ranked_key(query, where)
        if key is not None:
            found = list_order.neighbours(con, INDEX, scope, query.metric, key, feature_id)
            if found is not None:
                return found
        places = [
            r["pos"]
            for r in list_order.indexed_rows(con, INDEX, scope, query.metric, "feature_id", [feature_id], "pos")
        ]
        here = (
            _rows(con, f"SELECT pos FROM {INDEX} WHERE {where} AND pos = ? LIMIT 1", [*params, places[0]])
            if places
            else []
        )

        def first(extra: str, extra_params: list[Any], reverse: bool = False) -> str | None:
            found = _rows(
                con,
                f"SELECT feature_id FROM {INDEX} WHERE {where}{extra} ORDER BY {self._order(query, reverse)} LIMIT 1",
                [*params, *extra_params],
            )
            return found[0]["feature_id"] if found else None

        if not here:
            return {"prev": None, "next": first("", []), "next_unreviewed": first(" AND status = 'unreviewed'", [])}
        pos = here[0]["pos"]
        after, after_params = self._keyset(con, query, scope, pos, forward=True) or ("", [])
        before, before_params = self._keyset(con, query, scope, pos, forward=False) or ("", [])
        next_unreviewed = first(after + " AND status = 'unreviewed'", after_params) or first(
            " AND status = 'unreviewed' AND feature_id <> ?", [feature_id]
        )
        return {
            "prev": first(before, before_params, reverse=True),
            "next": first(after, after_params),
            "next_unreviewed": next_unreviewed,
        }

    def feature_facets(self) -> dict[str, list[Any]]:
        """Returns the values the feature list can be filtered by: hooks, kinds, runs and metrics (kept while
        the store's fingerprint stays the same)."""
        with self.store.connect(read_only=True) as con:
            fingerprint = self.list_index.fingerprint(con)
            cached = _FACETS.get(str(self.store.path))
            if cached is not None and cached[0] == fingerprint:
                return cached[1]

            def column(sql: str) -> list[Any]:
                return [r[0] for r in con.execute(sql).fetchall()]

            facets = {
                "hooks": column("SELECT DISTINCT hook FROM features ORDER BY hook"),
                "kinds": column("SELECT DISTINCT kind FROM features ORDER BY kind"),
                "runs": column("SELECT id FROM runs ORDER BY created_at DESC"),
                "metrics": column("SELECT DISTINCT metric FROM scores ORDER BY metric"),
            }
        _FACETS[str(self.store.path)] = (fingerprint, facets)
        return facets


def _check_scope(con: duckdb.DuckDBPyConnection, query: FeatureQuery) -> None:
    """Raises UnknownListScope when `query` names a run the store does not hold, or a metric (other than the
    default, which an empty store lacks too) no score has. Returns None."""
    if query.run_id is not None and not con.execute("SELECT 1 FROM runs WHERE id = ?", [query.run_id]).fetchone():
        raise UnknownListScope(f"no run {query.run_id[:80]!r} in this database; pick one from the list's run filter")
    if query.metric != MAIN_METRIC:
        found = con.execute("SELECT 1 FROM scores WHERE metric = ? LIMIT 1", [query.metric]).fetchone()
        if not found:
            raise UnknownListScope(
                f"no scores of metric {query.metric[:80]!r} in this database; pick one from the list's metric filter"
            )


_FACETS: dict[str, tuple[str, dict[str, list[Any]]]] = {}
"""Facets per store file, with the fingerprint they were read at."""


def _rows(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
    """Returns a query's rows as dicts."""
    cursor = con.execute(sql, list(params))
    names = [d[0] for d in cursor.description or []]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
