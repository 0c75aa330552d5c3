"""The review app's reads and its one write (reviews): the feature list (`feature_list`), a feature's
record, bulk actions and their undo, exports.

The pipeline's reads and writes live in `autointerp.store.database`; this module holds the queries only the
review app and `autointerp export` need, over the same short connections.

Reviews are append-only. A feature's status is its current explanation's latest *decision*
(accept, reject, edit, or clear: back to unreviewed, written by an undo); notes and experiment
requests are reviews that decide nothing. A bulk action's rows have ids `bulk-<batch>-<n>`, and
the rows that undo it `undo-<batch>-<n>`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import duckdb

from autointerp.errors import AutointerpError, StoreError
from autointerp.metric_names import MAIN_METRIC
from autointerp.review.feature_list import DECIDED_SQL, STATUS_SQL, FeatureListQueries
from autointerp.store.database import Store
from autointerp.store.lookups import feature_record

DECISIONS = ("accept", "reject", "edit", "clear")
"""Review verdicts that set a status; `clear` (written by an undo) sets it back to unreviewed."""
STATUS_OF_DECISION = {"accept": "accepted", "reject": "rejected", "edit": "edited", "clear": "unreviewed"}


class UnknownExplanation(StoreError):
    """A review names an explanation the database does not hold."""


class ReviewConflict(StoreError):
    """A review action that no longer applies (a bulk action already undone, or unknown)."""


class ReviewQueries(FeatureListQueries):
    """The review app's queries over one store: the feature list's (`FeatureListQueries`), a feature's
    record, reviews and bulk actions, and what `autointerp export` reads."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def feature_record(self, feature_id: str) -> dict[str, list[dict[str, Any]]]:
        """Returns everything stored about one feature, across runs, table by table."""
        with self.store.connect(read_only=True) as con:  # each table read by index (`autointerp.store.lookups`)
            return feature_record(con, feature_id)

    def unread_tokens(self, run_ids: list[str]) -> dict[str, int]:
        """Returns run id -> how many leading tokens of each window its features do not read (`skipped_tokens`
        of its stored `features` section, read even where another section does not validate here); 0 where the
        config is not JSON, its features section no longer validates or names a kind not installed here."""
        from autointerp.config import stored_features_config
        from autointerp.records import stored_json
        from autointerp.subject.kinds import skipped_tokens

        rows = self.store.query("SELECT id, config FROM runs WHERE id = ANY(?::VARCHAR[])", [sorted(set(run_ids))])
        unread: dict[str, int] = {}
        for row in rows:
            stored = stored_json(row["config"])  # None where the text is not JSON
            features = stored_features_config(stored if isinstance(stored, dict) else None)
            try:
                unread[row["id"]] = skipped_tokens(features) if features else 0
            except AutointerpError:  # a plugin kind this server does not have
                unread[row["id"]] = 0
        return unread

    def add_review(self, review: dict[str, Any]) -> None:
        """Stores one review action (accept, reject, edit, note, request_experiments) in a short transaction;
        raises UnknownExplanation when its explanation is not in the database."""
        self.add_reviews([review])

    def add_reviews(self, reviews: list[dict[str, Any]]) -> int:
        """Stores review rows in one transaction; returns how many. Raises UnknownExplanation (storing
        nothing) when one names an explanation that is not in the database."""
        if not reviews:
            return 0
        wanted = sorted({str(r["explanation_id"]) for r in reviews})
        with self.store.transaction() as con:
            found = con.execute("SELECT id FROM explanations WHERE id IN (SELECT unnest(?::VARCHAR[]))", [wanted])
            missing = set(wanted) - {row[0] for row in found.fetchall()}
            if missing:
                raise UnknownExplanation(f"no explanation {min(missing)[:80]!r}; it may belong to another database")
            before = self.list_index.fingerprint(con)
            written = Store.insert_rows(con, "reviews", reviews)
            self.list_index.refresh_reviews(con, wanted, before)
            return written

    def bulk_summary(self, batch: str) -> dict[str, Any] | None:
        """Returns what bulk action `batch` did (verdict, features, reviewer, time) and how many of its
        rows were undone; None when there is no such batch."""
        row = self.store.query(
            """
            SELECT any_value(verdict) AS verdict, count(*) AS features, any_value(reviewer) AS reviewer,
                   min(created_at) AS created_at,
                   (SELECT count(*) FROM reviews WHERE starts_with(id, 'undo-' || ? || '-')) AS undone
            FROM reviews WHERE starts_with(id, 'bulk-' || ? || '-')
            """,
            [batch, batch],
        )[0]
        return row if row["features"] else None

    def undo_bulk(self, batch: str, reviewer: str, when: datetime) -> tuple[int, int]:
        """Restores each explanation of bulk action `batch` to its status before it, as new review rows
        (`clear` where it was unreviewed); an explanation decided again since is left alone.
        Returns (restored, left alone); raises ReviewConflict when the batch is unknown or was already undone
        (when every explanation was decided again since, nothing is written and it stays undoable)."""
        with self.store.transaction() as con:
            undone = con.execute("SELECT count(*) FROM reviews WHERE starts_with(id, 'undo-' || ? || '-')", [batch])
            if (undone.fetchone() or (0,))[0]:
                raise ReviewConflict("this bulk action was already undone")
            cursor = con.execute(
                """
                WITH batch AS (SELECT * FROM reviews WHERE starts_with(id, 'bulk-' || ? || '-')),
                latest AS (
                    SELECT explanation_id, id FROM reviews
                    WHERE verdict IN ('accept', 'reject', 'edit', 'clear')
                      AND explanation_id IN (SELECT explanation_id FROM batch)
                    QUALIFY row_number() OVER (PARTITION BY explanation_id ORDER BY created_at DESC) = 1
                ), before AS (
                    SELECT r.explanation_id, r.verdict, r.edited_text FROM reviews r
                    JOIN batch b ON b.explanation_id = r.explanation_id
                    WHERE r.verdict IN ('accept', 'reject', 'edit', 'clear') AND r.created_at < b.created_at
                      AND NOT starts_with(r.id, 'bulk-' || ? || '-')
                    QUALIFY row_number() OVER (PARTITION BY r.explanation_id ORDER BY r.created_at DESC) = 1
                )
                SELECT b.explanation_id, latest.id = b.id AS still_current, before.verdict AS verdict,
                       before.edited_text AS edited_text
                FROM batch b LEFT JOIN latest USING (explanation_id) LEFT JOIN before USING (explanation_id)
                ORDER BY b.id
                """,
                [batch, batch],
            )
            targets = cursor.fetchall()
            rows = [
                {
                    "id": f"undo-{batch}-{n}",
                    "explanation_id": explanation_id,
                    "verdict": verdict or "clear",
                    "edited_text": edited_text if verdict == "edit" else None,
                    "reviewer": reviewer,
                    "note": None,
                    "created_at": when,
                }
                for n, (explanation_id, still_current, verdict, edited_text) in enumerate(targets)
                if still_current
            ]
            if not targets:
                raise ReviewConflict(f"no bulk action {batch[:40]!r}")
            before = self.list_index.fingerprint(con)
            Store.insert_rows(con, "reviews", rows)
            self.list_index.refresh_reviews(con, [r["explanation_id"] for r in rows], before)
            return len(rows), len(targets) - len(rows)

    def reviewed_explanations(self) -> list[dict[str, Any]]:
        """Returns every explanation with a review of any kind (decision, note, experiment request): its
        status and latest decision (verdict None when there is none), final text, notes, whether more
        experiments were requested, feature and headline score."""
        return self.store.query(
            f"""
            WITH decided AS ({DECIDED_SQL}),
            agg AS (
                SELECT explanation_id,
                       string_agg(note, ' | ' ORDER BY created_at) FILTER (WHERE note IS NOT NULL AND note <> '')
                           AS notes,
                       count(*) FILTER (WHERE verdict = 'request_experiments') > 0 AS experiments_requested,
                       count(*) AS reviews, max(created_at) AS last_reviewed_at
                FROM reviews GROUP BY explanation_id
            ), headline AS (
                SELECT explanation_id, arg_max(value, created_at) AS value FROM scores WHERE metric = ?
                GROUP BY explanation_id
            )
            SELECT e.feature_id, e.id AS explanation_id, e.run_id, e.explainer, e.prompt_hash,
                   e.text AS original_text,
                   coalesce(CASE WHEN d.verdict = 'edit' THEN d.edited_text END, e.text) AS text,
                   CASE WHEN d.verdict <> 'clear' THEN d.verdict END AS verdict, {STATUS_SQL.format("d")} AS status,
                   d.reviewer, d.created_at AS reviewed_at, agg.notes, agg.experiments_requested,
                   agg.reviews, agg.last_reviewed_at, headline.value AS score
            FROM agg JOIN explanations e ON e.id = agg.explanation_id
            LEFT JOIN decided d ON d.explanation_id = e.id
            LEFT JOIN headline ON headline.explanation_id = e.id
            ORDER BY e.feature_id, coalesce(d.created_at, agg.last_reviewed_at), e.id
            """,
            [MAIN_METRIC],
        )


def refresh_index(store: Store, progress: Callable[[str], None] | None = None) -> str | None:
    """Brings the feature list index up to date with what a run or an import wrote (else the app's first page
    after it rebuilds it: a minute at a million features). Returns None when the index is current, else why it
    could not be built, in one line: a failure is the caller's to report, never to raise, since the index is
    derived data that `autointerp review` builds when it finds it stale."""
    try:
        ReviewQueries(store).check_index(progress)
    except (AutointerpError, duckdb.Error) as exc:
        return f"the review app's feature list index was not built ({exc}); `autointerp review` builds it"
    return None
