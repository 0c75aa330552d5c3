"""The review app's feature list: filters, sort and page (`FeatureQuery`), one page of it (`FeaturePage`),
and the queries over it (`FeatureListQueries`, part of `ReviewQueries`): the page, the features a bulk
action reviews, a feature's neighbours in the list, and the values the list can be filtered by.

A feature's status is its current explanation's latest decision (`DECIDED_SQL`, `STATUS_SQL`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autointerp.errors import StoreError
from autointerp.metric_names import DISTRACTOR_SUFFIX, MAIN_METRIC
from autointerp.score.confidence import like_chance_sql, stored_confidence
from autointerp.store.database import Store

FEATURE_SORTS = {
    "score": "score",
    "feature": "feature_id",
    "index": "idx",
    "layer": "hook",
    "density": "density",
    "status": "status",
    "run": "run_id",
    "disagreement": "disagreement",
}
"""Columns the feature list can be sorted by (the only strings that reach ORDER BY)."""

CHANCE_FILTERS = ("only", "hide")
"""The list's chance-level filter: only the explanations not distinguishable from their distractor, or all but them."""

LIST_TEXT_CHARS = 300
"""Characters of an explanation the list shows (a degenerate model output can be 100 KB)."""

DECIDED_SQL = """
    SELECT explanation_id, verdict, edited_text, reviewer, created_at FROM reviews
    WHERE verdict IN ('accept', 'reject', 'edit', 'clear')
    QUALIFY row_number() OVER (PARTITION BY explanation_id ORDER BY created_at DESC) = 1
"""
"""Each reviewed explanation's latest decision."""

_CHANCE_LEVEL = f"""
    SELECT explanation_id FROM (
        SELECT explanation_id,
               CASE WHEN json_type(confidence, '$.p_vs_distractor') IN ('DOUBLE', 'BIGINT', 'UBIGINT')
                    THEN CAST(json_extract(confidence, '$.p_vs_distractor') AS DOUBLE) END AS p
        FROM (
            SELECT explanation_id, arg_max_null(json_extract(details, '$.confidence'), created_at) AS confidence
            FROM scores WHERE metric = ? GROUP BY explanation_id
        )
    ) WHERE {like_chance_sql("p")}
"""
"""Explanations whose latest score of a metric is chance-level (`like_chance` on the stored p, read as
`stored_confidence` reads it). It parses every such score's details: only the chance filter runs it."""

STATUS_SQL = """CASE {0}.verdict WHEN 'accept' THEN 'accepted' WHEN 'reject' THEN 'rejected'
                 WHEN 'edit' THEN 'edited' ELSE 'unreviewed' END"""
"""The status of a decision row (`.format(alias)`): accepted, rejected, edited or unreviewed."""


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
    """`only`: keep explanations whose headline score is not distinguishable from its distractor's;
    `hide`: leave them out (scores without a confidence are never chance-level)."""
    sort: str = "score"
    descending: bool = True
    limit: int = 50
    offset: int = 0

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


class FeatureListQueries:
    """The feature list's queries over one store.

    Scorer disagreement of an explanation: each scorer's headline metric (the main metric, else an
    AUROC, else the first by name) is turned into a percentile among the listed explanations'
    values of that metric; the disagreement is the largest minus the smallest percentile (0: the
    scorers rank it alike, 1: one ranks it best and another worst). It needs two scorers.
    """

    store: Store

    def _feature_list_sql(self, query: FeatureQuery) -> tuple[str, list[Any], str]:
        """Returns the SQL, parameters and ORDER BY terms of the filtered feature list, one row per feature."""
        run_filter = "WHERE run_id = ?" if query.run_id else ""
        feature_run_filter = "WHERE f.run_id = ?" if query.run_id else ""
        run_params: list[Any] = [query.run_id] if query.run_id else []
        sql = f"""
            WITH feat AS (
                SELECT f.id AS feature_id, arg_max(f.hook, r.created_at) AS hook, arg_max(f.kind, r.created_at) AS kind,
                       arg_max(f.idx, r.created_at) AS idx, arg_max(f.model, r.created_at) AS model,
                       arg_max(f.density, r.created_at) AS density, arg_max(f.max_activation, r.created_at) AS max_act,
                       bool_or(f.dead) AS dead
                FROM features f JOIN runs r ON r.id = f.run_id {feature_run_filter} GROUP BY f.id
            ), ex AS (
                SELECT * FROM explanations {run_filter}
                QUALIFY row_number() OVER (PARTITION BY feature_id ORDER BY created_at DESC, iteration DESC) = 1
            ), decided AS ({DECIDED_SQL}
            ), earlier AS (
                SELECT e.feature_id, arg_max(d.verdict, d.created_at) AS verdict,
                       arg_max(e.id, d.created_at) AS explanation_id, arg_max(e.run_id, d.created_at) AS run_id,
                       arg_max(left(e.text, {LIST_TEXT_CHARS}), d.created_at) AS text
                FROM decided d JOIN explanations e ON e.id = d.explanation_id
                JOIN ex cur ON cur.feature_id = e.feature_id AND cur.id <> e.id AND e.created_at <= cur.created_at
                WHERE d.verdict <> 'clear'
                GROUP BY e.feature_id
            ), flags AS (
                SELECT e.feature_id,
                       count(*) FILTER (WHERE r.note IS NOT NULL AND trim(r.note) <> '') AS notes,
                       count(*) FILTER (WHERE r.verdict = 'request_experiments') AS requests
                FROM reviews r JOIN explanations e ON e.id = r.explanation_id GROUP BY e.feature_id
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
                SELECT explanation_id, arg_max(value, created_at) AS value FROM scores WHERE metric = ?
                GROUP BY explanation_id
            ), headline_distractor AS (
                SELECT explanation_id, arg_max(value, created_at) AS value FROM scores WHERE metric = ?
                GROUP BY explanation_id
            ), listed AS (
                SELECT feat.*, ex.id AS explanation_id, ex.run_id, ex.explainer,
                       left(ex.text, {LIST_TEXT_CHARS}) AS explanation, length(ex.text) AS explanation_chars,
                       headline.value AS score, headline_distractor.value AS score_distractor,
                       {STATUS_SQL.format("d")} AS status,
                       CASE WHEN d.verdict = 'edit' THEN left(d.edited_text, {LIST_TEXT_CHARS}) END AS edited_text,
                       CASE WHEN d.verdict = 'edit' THEN length(d.edited_text) END AS edited_chars,
                       coalesce(CASE WHEN d.verdict = 'edit' THEN d.edited_text END, ex.text, '') AS search_text,
                       {STATUS_SQL.format("earlier")} AS earlier_status,
                       earlier.explanation_id AS earlier_explanation_id,
                       earlier.run_id AS earlier_run_id, earlier.text AS earlier_text,
                       coalesce(flags.notes, 0) AS notes, coalesce(flags.requests, 0) AS experiment_requests,
                       disagree.disagreement
                FROM feat
                LEFT JOIN ex ON ex.feature_id = feat.feature_id
                LEFT JOIN headline ON headline.explanation_id = ex.id
                LEFT JOIN headline_distractor ON headline_distractor.explanation_id = ex.id
                LEFT JOIN decided d ON d.explanation_id = ex.id
                LEFT JOIN earlier ON earlier.feature_id = feat.feature_id
                LEFT JOIN flags ON flags.feature_id = feat.feature_id
                LEFT JOIN disagree ON disagree.explanation_id = ex.id
            )
            SELECT * FROM listed WHERE 1 = 1
        """
        all_params: list[Any] = [
            *run_params,
            *run_params,
            MAIN_METRIC,
            query.metric,
            query.metric + DISTRACTOR_SUFFIX,
        ]
        if query.hook:
            sql += " AND hook = ?"
            all_params.append(query.hook)
        if query.kind:
            sql += " AND kind = ?"
            all_params.append(query.kind)
        if query.status:
            sql += " AND status = ?"
            all_params.append(query.status)
        if query.search:
            sql += " AND contains(lower(search_text), lower(?))"
            all_params.append(query.search)
        if query.min_score is not None:
            sql += " AND score >= ?"
            all_params.append(query.min_score)
        if query.max_score is not None:
            sql += " AND score <= ?"
            all_params.append(query.max_score)
        if query.min_disagreement is not None:
            sql += " AND disagreement >= ?"
            all_params.append(query.min_disagreement)
        if query.has_note:
            sql += " AND notes > 0"
        if query.experiments_requested:
            sql += " AND experiment_requests > 0"
        if query.chance == "only":
            sql += f" AND explanation_id IN ({_CHANCE_LEVEL})"
            all_params.append(query.metric)
        elif query.chance == "hide":
            sql += f" AND (explanation_id IS NULL OR explanation_id NOT IN ({_CHANCE_LEVEL}))"
            all_params.append(query.metric)
        column = FEATURE_SORTS[query.sort]
        direction = "DESC" if query.descending else "ASC"
        return sql, all_params, f"{column} {direction} NULLS LAST, hook, idx, feature_id"

    def feature_list(self, query: FeatureQuery) -> FeaturePage:
        """Returns one page of the feature list with the number of features matching the filters."""
        sql, params, order = self._feature_list_sql(query)
        rows = self.store.query(
            f"SELECT * EXCLUDE (search_text), count(*) OVER () AS total, count(explanation_id) OVER () AS reviewable "
            f"FROM ({sql}) ORDER BY {order} LIMIT ? OFFSET ?",
            [*params, query.limit, query.offset],
        )
        if rows:
            return FeaturePage(
                self._with_confidence(rows, query.metric), int(rows[0]["total"]), int(rows[0]["reviewable"])
            )
        counts = self.store.query(f"SELECT count(*) AS n, count(explanation_id) AS r FROM ({sql})", params)[0]
        return FeaturePage(rows, int(counts["n"]), int(counts["r"]))

    def _with_confidence(self, rows: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
        """Returns the page's rows with their headline score's stored confidence (None without one),
        read from the latest score's details of those rows only."""
        ids = [r["explanation_id"] for r in rows if r["explanation_id"] is not None]
        details = {
            d["explanation_id"]: d["details"]
            for d in self.store.query(
                "SELECT explanation_id, arg_max_null(details, created_at) AS details FROM scores "
                "WHERE metric = ? AND explanation_id IN (SELECT unnest(?::VARCHAR[])) GROUP BY explanation_id",
                [metric, ids],
            )
        }
        return [{**r, "confidence": stored_confidence(details.get(r["explanation_id"]))} for r in rows]

    def bulk_targets(self, query: FeatureQuery, limit: int) -> list[dict[str, Any]]:
        """Returns (feature_id, explanation_id, status) of every listed feature with an explanation, in
        list order, at most `limit` of them (ignores the query's page)."""
        sql, params, order = self._feature_list_sql(query)
        return self.store.query(
            f"SELECT feature_id, explanation_id, status FROM ({sql}) WHERE explanation_id IS NOT NULL "
            f"ORDER BY {order} LIMIT ?",
            [*params, limit],
        )

    def feature_neighbours(self, query: FeatureQuery, feature_id: str) -> dict[str, str | None]:
        """Returns the previous, next and next unreviewed feature ids around `feature_id` in the list."""
        sql, params, order = self._feature_list_sql(query)
        rows = self.store.query(
            f"""
            WITH ordered AS (SELECT feature_id, status, row_number() OVER (ORDER BY {order}) AS pos FROM ({sql})),
                 here AS (SELECT coalesce(min(pos), 0) AS pos FROM ordered WHERE feature_id = ?)
            SELECT
              (SELECT feature_id FROM ordered, here WHERE ordered.pos = here.pos - 1) AS prev,
              (SELECT feature_id FROM ordered, here WHERE ordered.pos = here.pos + 1) AS next,
              (SELECT feature_id FROM ordered, here WHERE ordered.pos > here.pos AND status = 'unreviewed'
               ORDER BY ordered.pos LIMIT 1) AS next_unreviewed,
              (SELECT feature_id FROM ordered WHERE status = 'unreviewed' AND feature_id <> ?
               ORDER BY pos LIMIT 1) AS first_unreviewed
            """,
            [*params, feature_id, feature_id],
        )
        row = rows[0]
        return {
            "prev": row["prev"],
            "next": row["next"],
            "next_unreviewed": row["next_unreviewed"] or row["first_unreviewed"],
        }

    def feature_facets(self) -> dict[str, list[Any]]:
        """Returns the values the feature list can be filtered by: hooks, kinds, runs and metrics."""
        return {
            "hooks": [r["hook"] for r in self.store.query("SELECT DISTINCT hook FROM features ORDER BY hook")],
            "kinds": [r["kind"] for r in self.store.query("SELECT DISTINCT kind FROM features ORDER BY kind")],
            "runs": [r["id"] for r in self.store.query("SELECT id FROM runs ORDER BY created_at DESC")],
            "metrics": [r["metric"] for r in self.store.query("SELECT DISTINCT metric FROM scores ORDER BY metric")],
        }
