"""The review app's reads and its one write (reviews): the feature list, a feature's record, exports.

The pipeline's reads and writes live in `autointerp.store`; this module holds the queries only the
review app and `autointerp export` need, over the same short connections.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autointerp.errors import StoreError
from autointerp.metric_names import MAIN_METRIC
from autointerp.store import Store

FEATURE_SORTS = {
    "score": "score",
    "feature": "feature_id",
    "index": "idx",
    "layer": "hook",
    "density": "density",
    "status": "status",
    "run": "run_id",
}
"""Columns the feature list can be sorted by (the only strings that reach ORDER BY)."""


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
    sort: str = "score"
    descending: bool = True
    limit: int = 50
    offset: int = 0

    def __post_init__(self) -> None:
        if self.sort not in FEATURE_SORTS:
            raise StoreError(f"cannot sort by {self.sort!r}; choose one of {', '.join(FEATURE_SORTS)}")


class ReviewQueries:
    """The review app's queries over one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _feature_list_sql(self, query: FeatureQuery) -> tuple[str, list[Any], str]:
        """Returns the SQL, parameters and ORDER BY terms of the filtered feature list, one row per feature."""
        run_filter = "WHERE run_id = ?" if query.run_id else ""
        params: list[Any] = [query.run_id] if query.run_id else []
        feature_run_filter = "WHERE f.run_id = ?" if query.run_id else ""
        params_f: list[Any] = [query.run_id] if query.run_id else []
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
            ), rv AS (
                SELECT explanation_id, verdict, edited_text, reviewer FROM reviews
                WHERE verdict IN ('accept', 'reject', 'edit')
                QUALIFY row_number() OVER (PARTITION BY explanation_id ORDER BY created_at DESC) = 1
            ), listed AS (
                SELECT feat.*, ex.id AS explanation_id, ex.run_id, ex.text AS explanation, ex.explainer,
                       s.value AS score,
                       CASE rv.verdict WHEN 'accept' THEN 'accepted' WHEN 'reject' THEN 'rejected'
                            WHEN 'edit' THEN 'edited' ELSE 'unreviewed' END AS status,
                       rv.edited_text
                FROM feat
                LEFT JOIN ex ON ex.feature_id = feat.feature_id
                LEFT JOIN scores s ON s.explanation_id = ex.id AND s.metric = ?
                LEFT JOIN rv ON rv.explanation_id = ex.id
            )
            SELECT * FROM listed WHERE 1 = 1
        """
        all_params: list[Any] = [*params_f, *params, query.metric]
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
            sql += " AND contains(lower(coalesce(edited_text, explanation, '')), lower(?))"
            all_params.append(query.search)
        if query.min_score is not None:
            sql += " AND score >= ?"
            all_params.append(query.min_score)
        if query.max_score is not None:
            sql += " AND score <= ?"
            all_params.append(query.max_score)
        column = FEATURE_SORTS[query.sort]
        direction = "DESC" if query.descending else "ASC"
        return sql, all_params, f"{column} {direction} NULLS LAST, hook, idx, feature_id"

    def feature_list(self, query: FeatureQuery) -> tuple[list[dict[str, Any]], int]:
        """Returns one page of the feature list and the number of features matching the filters."""
        sql, params, order = self._feature_list_sql(query)
        rows = self.store.query(
            f"SELECT *, count(*) OVER () AS total FROM ({sql}) ORDER BY {order} LIMIT ? OFFSET ?",
            [*params, query.limit, query.offset],
        )
        if rows:
            return rows, int(rows[0]["total"])
        total = self.store.query(f"SELECT count(*) AS n FROM ({sql})", params)[0]["n"]
        return rows, int(total)

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

    def feature_record(self, feature_id: str) -> dict[str, list[dict[str, Any]]]:
        """Returns everything stored about one feature, across runs, table by table."""
        with self.store.connect(read_only=True) as con:

            def rows(sql: str, params: list[Any]) -> list[dict[str, Any]]:
                cursor = con.execute(sql, params)
                names = [d[0] for d in cursor.description or []]
                return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

            explanation_ids = "SELECT id FROM explanations WHERE feature_id = ?"
            return {
                "features": rows(
                    "SELECT f.*, r.created_at AS run_created_at FROM features f JOIN runs r ON r.id = f.run_id "
                    "WHERE f.id = ? ORDER BY r.created_at DESC",
                    [feature_id],
                ),
                "explanations": rows(
                    "SELECT * FROM explanations WHERE feature_id = ? ORDER BY created_at DESC, iteration DESC",
                    [feature_id],
                ),
                "exemplars": rows(
                    "SELECT * FROM exemplars WHERE feature_id = ? ORDER BY run_id, kind DESC, rank", [feature_id]
                ),
                "scores": rows(
                    f"SELECT * FROM scores WHERE explanation_id IN ({explanation_ids}) ORDER BY metric", [feature_id]
                ),
                "experiments": rows(
                    f"SELECT * FROM experiments WHERE explanation_id IN ({explanation_ids}) ORDER BY created_at",
                    [feature_id],
                ),
                "llm_calls": rows(
                    f"SELECT * FROM llm_calls WHERE feature_id = ? OR explanation_id IN ({explanation_ids}) "
                    "ORDER BY created_at",
                    [feature_id, feature_id],
                ),
                "reviews": rows(
                    f"SELECT * FROM reviews WHERE explanation_id IN ({explanation_ids}) ORDER BY created_at DESC",
                    [feature_id],
                ),
            }

    def add_review(self, review: dict[str, Any]) -> None:
        """Stores one review action (accept, reject, edit, note, request_experiments) in a short transaction."""
        with self.store.transaction() as con:
            if not con.execute("SELECT 1 FROM explanations WHERE id = ?", [review["explanation_id"]]).fetchall():
                raise StoreError(f"no explanation {review['explanation_id']!r}")
            Store.insert_rows(con, "reviews", [review])

    def reviewed_explanations(self) -> list[dict[str, Any]]:
        """Returns each reviewed explanation's latest verdict, its final text, feature and score."""
        return self.store.query(
            """
            WITH rv AS (
                SELECT * FROM reviews WHERE verdict IN ('accept', 'reject', 'edit')
                QUALIFY row_number() OVER (PARTITION BY explanation_id ORDER BY created_at DESC) = 1
            ), notes AS (
                SELECT explanation_id, string_agg(note, ' | ' ORDER BY created_at) AS notes FROM reviews
                WHERE note IS NOT NULL AND note <> '' GROUP BY explanation_id
            )
            SELECT e.feature_id, e.id AS explanation_id, e.run_id, e.explainer, e.prompt_hash,
                   e.text AS original_text, coalesce(rv.edited_text, e.text) AS text, rv.verdict,
                   rv.reviewer, rv.created_at AS reviewed_at, notes.notes,
                   (SELECT value FROM scores s WHERE s.explanation_id = e.id
                    AND s.metric = ?) AS score
            FROM rv JOIN explanations e ON e.id = rv.explanation_id
            LEFT JOIN notes ON notes.explanation_id = e.id
            ORDER BY e.feature_id, rv.created_at
        """,
            [MAIN_METRIC],
        )
