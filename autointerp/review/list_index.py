"""The feature list's index: one row per listed feature with every column the list shows, filters or sorts on,
and a word table for search, so that no page of the review app scans the run.

The index is derived data, kept in the store beside what it is built from: `feature_list_index` (one row per
scope, metric and feature: the scope is `*` for all runs or a run id), `feature_list_words` (each word of a
listed explanation, sorted by word so that a search reads only the row groups holding it) and
`feature_list_stamp` (what each scope was built from). A page first compares the store's fingerprint (row
counts and newest timestamps of the tables the list reads) with the stamp and rebuilds a stale scope; the
app's own review writes update the rows they touch in the same transaction (`refresh_reviews`). Opening the
app also compares a content checksum (`content_sum`), which sees rows edited in place. `autointerp review` builds
a missing or stale index before it serves (`FeatureListQueries.check_index`), so no page waits for it.

The index has ART indexes on `pos` and `feature_id` (a page's rows and a feature's place are point lookups), and
`feature_list_order` holds each row's rank in every sort a review cannot change (`autointerp.review.list_order`),
so any page number of an unfiltered list is a range of ranks.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any

import duckdb

from autointerp.metric_names import DISTRACTOR_SUFFIX, MAIN_METRIC
from autointerp.review import list_order
from autointerp.score.confidence import CONFIDENCE_METRICS, like_chance_sql

INDEX = "feature_list_index"
WORDS = "feature_list_words"
STAMP = "feature_list_stamp"
ALL_RUNS = "*"

LIST_TEXT_CHARS = 300
"""Characters of an explanation the list shows (a degenerate model output can be 100 KB)."""

WORD_SPLIT_SQL = r"[^\pL\pN]+"
"""What separates words of an explanation, for the word table (RE2: anything but letters and digits)."""
_WORD_SPLIT = re.compile(r"[\W_]+")


def query_words(text: str) -> list[str]:
    """Returns the words of a search, lower-cased, as the word table splits explanations (empty: no word)."""
    return sorted({w for w in _WORD_SPLIT.split(text.lower()) if w})


DECIDED_SQL = """
    SELECT explanation_id, verdict, edited_text, reviewer, created_at FROM reviews
    WHERE verdict IN ('accept', 'reject', 'edit', 'clear')
    QUALIFY row_number() OVER (PARTITION BY explanation_id ORDER BY created_at DESC) = 1
"""
"""Each reviewed explanation's latest decision."""

STATUS_SQL = """CASE {0}.verdict WHEN 'accept' THEN 'accepted' WHEN 'reject' THEN 'rejected'
                 WHEN 'edit' THEN 'edited' ELSE 'unreviewed' END"""
"""The status of a decision row (`.format(alias)`): accepted, rejected, edited or unreviewed."""


def _review_columns(feature_filter: str) -> str:
    """Returns the SQL of the columns a review changes, one row per (scope, metric, pos) of the index rows
    that `feature_filter` (a WHERE condition over the index alias `i`) keeps."""
    return f"""
        WITH cur AS (
            SELECT i.scope, i.metric, i.pos, i.feature_id, i.explanation_id, i.explanation_created_at, e.text
            FROM {INDEX} i LEFT JOIN explanations e ON e.id = i.explanation_id WHERE {feature_filter}
        ), decided AS ({DECIDED_SQL}
        ), earlier AS (
            SELECT cur.scope, cur.feature_id, arg_max(d.verdict, d.created_at) AS verdict,
                   arg_max(e.id, d.created_at) AS explanation_id, arg_max(e.run_id, d.created_at) AS run_id,
                   arg_max(left(e.text, {LIST_TEXT_CHARS}), d.created_at) AS text
            FROM (SELECT DISTINCT scope, feature_id, explanation_id, explanation_created_at FROM cur) cur
            JOIN explanations e ON e.feature_id = cur.feature_id AND e.id <> cur.explanation_id
                 AND e.created_at <= cur.explanation_created_at
            JOIN decided d ON d.explanation_id = e.id
            WHERE d.verdict <> 'clear'
            GROUP BY cur.scope, cur.feature_id
        ), flags AS (
            SELECT e.feature_id,
                   count(*) FILTER (WHERE r.note IS NOT NULL AND trim(r.note) <> '') AS notes,
                   count(*) FILTER (WHERE r.verdict = 'request_experiments') AS requests
            FROM reviews r JOIN explanations e ON e.id = r.explanation_id
            WHERE e.feature_id IN (SELECT feature_id FROM cur) GROUP BY e.feature_id
        )
        SELECT cur.scope, cur.metric, cur.pos,
               {STATUS_SQL.format("d")} AS status,
               CASE WHEN d.verdict = 'edit' THEN left(d.edited_text, {LIST_TEXT_CHARS}) END AS edited_text,
               CASE WHEN d.verdict = 'edit' THEN length(d.edited_text) END AS edited_chars,
               coalesce(CASE WHEN d.verdict = 'edit' THEN d.edited_text END, cur.text, '') AS search_text,
               {STATUS_SQL.format("earlier")} AS earlier_status,
               earlier.explanation_id AS earlier_explanation_id,
               earlier.run_id AS earlier_run_id, earlier.text AS earlier_text,
               coalesce(flags.notes, 0) AS notes, coalesce(flags.requests, 0) AS experiment_requests
        FROM cur
        LEFT JOIN decided d ON d.explanation_id = cur.explanation_id
        LEFT JOIN earlier ON earlier.scope = cur.scope AND earlier.feature_id = cur.feature_id
        LEFT JOIN flags ON flags.feature_id = cur.feature_id
    """


REVIEW_COLUMNS = (
    "status",
    "edited_text",
    "edited_chars",
    "search_text",
    "earlier_status",
    "earlier_explanation_id",
    "earlier_run_id",
    "earlier_text",
    "notes",
    "experiment_requests",
)


def _build_sql(run_id: str | None, metric_columns: dict[str, tuple[str, bool]]) -> str:
    """Returns the SQL of a scope's index rows before the review columns (parameters: run id twice when
    `run_id`, MAIN_METRIC, metric, metric's distractor, each extra column's metric (and run id for a
    per-feature one in a run's scope), then scope and metric). An extra column (column -> (metric, per
    feature)) holds the latest value of that metric: of the current explanation's scores, or of the
    feature's explanation-free scores (`feature_scores`) when per feature."""
    run_filter = "WHERE run_id = ?" if run_id else ""
    feature_run_filter = "WHERE f.run_id = ?" if run_id else ""
    extra = "".join(
        f", (SELECT arg_max(s.value, s.created_at) FROM feature_scores s WHERE s.feature_id = feat.feature_id"
        f" AND s.metric = ?{' AND s.run_id = ?' if run_id else ''}) AS {column}"
        if per_feature
        else f", (SELECT arg_max(s.value, s.created_at) FROM scores s WHERE s.explanation_id = ex.id AND s.metric = ?)"
        f" AS {column}"
        for column, (_metric, per_feature) in metric_columns.items()
    )
    return f"""
        WITH feat AS (
            SELECT f.id AS feature_id, arg_max(f.hook, r.created_at) AS hook, arg_max(f.kind, r.created_at) AS kind,
                   arg_max(f.idx, r.created_at) AS idx, arg_max(f.model, r.created_at) AS model,
                   arg_max(f.density, r.created_at) AS density, arg_max(f.max_activation, r.created_at) AS max_act,
                   bool_or(f.dead) AS dead
            FROM features f JOIN runs r ON r.id = f.run_id {feature_run_filter} GROUP BY f.id
        ), ex AS (
            SELECT * FROM explanations {run_filter}
            QUALIFY row_number() OVER (PARTITION BY feature_id ORDER BY created_at DESC, iteration DESC) = 1
        ), ranked AS (
            SELECT s.explanation_id, percent_rank() OVER (PARTITION BY s.metric ORDER BY s.value) AS pct,
                   row_number() OVER (
                       PARTITION BY s.explanation_id, s.scorer
                       ORDER BY CASE WHEN s.metric = ? THEN 0 WHEN ends_with(s.metric, '_auroc') THEN 1 ELSE 2 END,
                                s.metric
                   ) AS pick
            FROM scores s JOIN ex ON ex.id = s.explanation_id
            WHERE s.value IS NOT NULL AND isfinite(s.value) AND NOT ends_with(s.metric, '_distractor')
        ), disagree AS (
            SELECT explanation_id, max(pct) - min(pct) AS disagreement
            FROM ranked WHERE pick = 1 GROUP BY explanation_id HAVING count(*) >= 2
        ), headline AS (
            -- a confidence only beside the metric it belongs to: a run copies it into every metric row of an outcome
            SELECT explanation_id, arg_max(value, created_at) AS value,
                   CASE WHEN any_value(metric) IN {CONFIDENCE_METRICS!r}
                        THEN arg_max_null(json_extract(details, '$.confidence'), created_at) END AS confidence
            FROM scores WHERE metric = ? GROUP BY explanation_id
        ), headline_distractor AS (
            SELECT explanation_id, arg_max(value, created_at) AS value FROM scores WHERE metric = ?
            GROUP BY explanation_id
        ), listed AS (
            SELECT feat.*, ex.id AS explanation_id, ex.run_id, ex.explainer, ex.created_at AS explanation_created_at,
                   left(ex.text, {LIST_TEXT_CHARS}) AS explanation, length(ex.text) AS explanation_chars,
                   headline.value AS score, headline_distractor.value AS score_distractor,
                   headline.confidence::VARCHAR AS confidence_json,
                   -- the score the chance rule reads: only beside a stored confidence (not a JSON null)
                   CASE WHEN json_type(headline.confidence) = 'OBJECT' THEN headline.value END AS confidence_score,
                   CASE WHEN json_type(headline.confidence, '$.p_vs_distractor') IN ('DOUBLE', 'BIGINT', 'UBIGINT')
                        THEN CAST(json_extract(headline.confidence, '$.p_vs_distractor') AS DOUBLE) END AS p_value,
                   disagree.disagreement {extra}
            FROM feat
            LEFT JOIN ex ON ex.feature_id = feat.feature_id
            LEFT JOIN headline ON headline.explanation_id = ex.id
            LEFT JOIN headline_distractor ON headline_distractor.explanation_id = ex.id
            LEFT JOIN disagree ON disagree.explanation_id = ex.id
        )
        SELECT ?::VARCHAR AS scope, ?::VARCHAR AS metric,
               row_number() OVER (ORDER BY hook, idx, feature_id) AS pos, *,
               {like_chance_sql("p_value", "confidence_score")} AS chance,
               'unreviewed' AS status, NULL::VARCHAR AS edited_text, NULL::BIGINT AS edited_chars,
               ''::VARCHAR AS search_text, 'unreviewed' AS earlier_status, NULL::VARCHAR AS earlier_explanation_id,
               NULL::VARCHAR AS earlier_run_id, NULL::VARCHAR AS earlier_text, 0::BIGINT AS notes,
               0::BIGINT AS experiment_requests
        FROM listed ORDER BY pos
    """


FINGERPRINT_SQL = """
    SELECT (SELECT count(*) FROM runs) || '/' || (SELECT count(*) FROM features) || '/'
        || (SELECT count(*) FROM explanations) || '/' || (SELECT count(*) FROM scores) || '/'
        || (SELECT count(*) FROM reviews) || '/' || coalesce((SELECT max(created_at) FROM runs)::VARCHAR, '') || '/'
        || coalesce((SELECT max(created_at) FROM explanations)::VARCHAR, '') || '/'
        || coalesce((SELECT max(created_at) FROM reviews)::VARCHAR, '')
"""
"""Row counts and newest timestamps of what the list reads: a page compares it with the index's stamp."""

RUN_WRITING_MINUTES = 10
"""A run counts as writing the store while its status is `running` and some LLM call was logged this recently
(a run killed with `kill -9` stays `running`, but stops logging)."""

RUN_WRITING_SQL = f"""
    SELECT EXISTS (SELECT 1 FROM runs WHERE status = 'running')
       AND coalesce((SELECT max(created_at) FROM llm_calls), TIMESTAMPTZ '1970-01-01')
           > now() - INTERVAL {RUN_WRITING_MINUTES} MINUTE
"""
"""Whether a run is writing the store now: the list's index is then served as built (the run rebuilds it at
its end) instead of being rebuilt for every page while rows keep arriving."""

CONTENT_SUMS = (
    "SELECT coalesce(sum(hash(id, hook, idx, density, max_activation, dead)), 0) FROM features",
    "SELECT coalesce(sum(hash(id, feature_id, text, created_at)), 0) FROM explanations",
    "SELECT coalesce(sum(hash(id, explanation_id, metric, value, created_at)), 0) FROM scores",
)
REVIEWS_SUM = "SELECT coalesce(sum(hash(id, explanation_id, verdict, edited_text, note, created_at)), 0) FROM reviews"
"""Checksums of the values the list shows: what the app compares when it opens (rows edited in place)."""


def content_sum(con: duckdb.DuckDBPyConnection, reviews_only: str | None = None) -> str:
    """Returns the store's content checksum; with `reviews_only` (an earlier checksum), that one with its
    reviews part recomputed (after a review write, which changes nothing else)."""
    if reviews_only is not None:
        parts = reviews_only.split("/")[:-1]
    else:
        parts = [str(con.execute(sql).fetchall()[0][0]) for sql in CONTENT_SUMS]
    return "/".join([*parts, str(con.execute(REVIEWS_SUM).fetchall()[0][0])])


class ListIndex:
    """Builds and keeps the feature list's index over one DuckDB connection's file."""

    def __init__(self, metric_columns: dict[str, tuple[str, bool]], sort_columns: Sequence[str] = ()) -> None:
        self.metric_columns = metric_columns
        """Extra index columns holding the latest value of another metric (column -> (metric, per feature))."""
        self.ranked = tuple(dict.fromkeys(c for c in sort_columns if c not in REVIEW_COLUMNS))
        """Sort columns with stored ranks (`autointerp.review.list_order`): all but those a review changes."""
        self.definition = hashlib.sha256(
            (_build_sql("r", metric_columns) + _review_columns("1") + WORD_SPLIT_SQL + repr(self.ranked)).encode()
        ).hexdigest()[:16]

    @staticmethod
    def fingerprint(con: duckdb.DuckDBPyConnection) -> str:
        """Returns the store's fingerprint (row counts, newest timestamps)."""
        rows = con.execute(FINGERPRINT_SQL).fetchall()
        return str(rows[0][0]) if rows else ""

    def _stamps(self, con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], dict[str, Any]]:
        found = con.execute(
            "SELECT 1 FROM information_schema.tables WHERE table_name = ? AND table_schema = 'main'", [STAMP]
        ).fetchall()
        if not found:
            return {}
        rows = con.execute(f"SELECT scope, metric, definition, fingerprint, content FROM {STAMP}").fetchall()
        return {(r[0], r[1]): {"definition": r[2], "fingerprint": r[3], "content": r[4]} for r in rows}

    def is_current(self, con: duckdb.DuckDBPyConnection, scope: str, metric: str) -> bool:
        """True when the index of (scope, metric) was built by this definition from the store as it is now."""
        stamp = self._stamps(con).get((scope, metric))
        return (
            stamp is not None
            and stamp["definition"] == self.definition
            and stamp["fingerprint"] == self.fingerprint(con)
        )

    def exists(self, con: duckdb.DuckDBPyConnection, scope: str, metric: str) -> bool:
        """True when an index of (scope, metric) by this definition exists, current or not."""
        stamp = self._stamps(con).get((scope, metric))
        return stamp is not None and stamp["definition"] == self.definition

    @staticmethod
    def run_writing(con: duckdb.DuckDBPyConnection) -> bool:
        """True while a run is writing the store (`RUN_WRITING_SQL`)."""
        rows = con.execute(RUN_WRITING_SQL).fetchall()
        return bool(rows and rows[0][0])

    def check_content(self, con: duckdb.DuckDBPyConnection) -> None:
        """Drops every scope whose content checksum differs from the store's (rows edited in place since)."""
        stamps = self._stamps(con)
        if not stamps:
            return
        content = content_sum(con)
        stale = [key for key, stamp in stamps.items() if stamp["content"] != content]
        for scope, metric in stale:
            con.execute(f"DELETE FROM {STAMP} WHERE scope = ? AND metric = ?", [scope, metric])

    def build(self, con: duckdb.DuckDBPyConnection, scope: str, metric: str) -> None:
        """(Re)builds the index rows and words of (scope, metric) inside the caller's transaction."""
        stamps = self._stamps(con)
        fresh = any(s["definition"] != self.definition for s in stamps.values()) or not stamps
        run_id = None if scope == ALL_RUNS else scope
        params: list[Any] = [*([run_id, run_id] if run_id else []), MAIN_METRIC, metric, metric + DISTRACTOR_SUFFIX]
        for extra_metric, per_feature in self.metric_columns.values():
            params += [extra_metric, run_id] if per_feature and run_id else [extra_metric]
        params += [scope, metric]
        sql = _build_sql(run_id, self.metric_columns)
        if fresh:
            for table in (INDEX, WORDS, STAMP, list_order.ORDER):
                con.execute(f"DROP TABLE IF EXISTS {table}")
            con.execute(f"CREATE TABLE {INDEX} AS {sql}", params)
            con.execute(f"CREATE INDEX {INDEX}_by_pos ON {INDEX} (pos)")  # a page's rows by position
            con.execute(f"CREATE INDEX {INDEX}_by_feature ON {INDEX} (feature_id)")  # a feature's place
            list_order.create_table(con)
            con.execute(f"CREATE TABLE {WORDS} (scope VARCHAR, word VARCHAR, pos BIGINT)")
            con.execute(
                f"CREATE TABLE {STAMP} (scope VARCHAR, metric VARCHAR, definition VARCHAR, fingerprint VARCHAR,"
                " content VARCHAR, PRIMARY KEY (scope, metric))"
            )
        else:
            con.execute(f"DELETE FROM {INDEX} WHERE scope = ? AND metric = ?", [scope, metric])
            con.execute(f"INSERT INTO {INDEX} {sql}", params)
        list_order.write_orders(con, INDEX, scope, metric, self.ranked)
        self._update_reviews(con, "i.scope = ? AND i.metric = ?", [scope, metric], sorted_words=True)
        content = content_sum(con)
        con.execute(
            f"INSERT OR REPLACE INTO {STAMP} VALUES (?, ?, ?, ?, ?)",
            [scope, metric, self.definition, self.fingerprint(con), content],
        )

    def _update_reviews(
        self, con: duckdb.DuckDBPyConnection, condition: str, params: Sequence[Any], sorted_words: bool = False
    ) -> None:
        """Recomputes the review columns and the words of the index rows that `condition` keeps."""
        assignments = ", ".join(f"{c} = fresh.{c}" for c in REVIEW_COLUMNS)
        con.execute(f"CREATE OR REPLACE TEMP TABLE _fresh_reviews AS {_review_columns(condition)}", list(params))
        con.execute(
            f"UPDATE {INDEX} SET {assignments} FROM _fresh_reviews fresh "
            f"WHERE {INDEX}.scope = fresh.scope AND {INDEX}.metric = fresh.metric AND {INDEX}.pos = fresh.pos"
        )
        con.execute(
            f"DELETE FROM {WORDS} WHERE (scope, pos) IN (SELECT (scope, pos) FROM _fresh_reviews)"
            if not sorted_words
            else f"DELETE FROM {WORDS} WHERE scope IN (SELECT DISTINCT scope FROM _fresh_reviews)"
        )
        con.execute(
            f"""
            INSERT INTO {WORDS}
            SELECT DISTINCT scope, word, pos FROM (
                SELECT scope, pos, unnest(regexp_split_to_array(lower(search_text), '{WORD_SPLIT_SQL}')) AS word
                FROM (SELECT DISTINCT scope, pos, search_text FROM _fresh_reviews)
            ) WHERE word <> '' ORDER BY scope, word, pos
            """
        )
        con.execute("DROP TABLE _fresh_reviews")

    def refresh_reviews(self, con: duckdb.DuckDBPyConnection, explanation_ids: Sequence[str], before: str) -> None:
        """After reviews of `explanation_ids` were written in this transaction: updates the index rows of their
        features, and moves the stamps that matched the store before the write (`before`, its fingerprint)
        to the store after it; a stamp that was stale already stays stale."""
        stamps = self._stamps(con)
        if not stamps:
            return
        condition = "i.feature_id IN (SELECT feature_id FROM explanations WHERE id IN (SELECT unnest(?::VARCHAR[])))"
        self._update_reviews(con, condition, [list(explanation_ids)])
        after = self.fingerprint(con)
        for (scope, metric), stamp in stamps.items():
            if stamp["fingerprint"] == before and stamp["definition"] == self.definition:
                con.execute(
                    f"UPDATE {STAMP} SET fingerprint = ?, content = ? WHERE scope = ? AND metric = ?",
                    [after, content_sum(con, reviews_only=stamp["content"]), scope, metric],
                )


def confidence_details(confidence_json: str | None) -> dict[str, Any] | None:
    """Returns a score's details holding only the stored confidence (what `stored_confidence` reads)."""
    if confidence_json is None:
        return None
    try:
        return {"confidence": json.loads(confidence_json)}
    except (json.JSONDecodeError, RecursionError):
        return None
