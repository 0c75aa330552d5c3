"""Typed reads of what a run holds: features and exemplars as records, explanations, scores, experiments
and the LLM calls behind them, each method one query."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from autointerp.records import Exemplar, Feature
from autointerp.store.connection import StoreConnection

RANKED_EXPLANATIONS = """
    SELECT e.*, s.value AS score,
           count(*) OVER (PARTITION BY e.feature_id) AS versions,
           row_number() OVER (PARTITION BY e.feature_id ORDER BY s.value DESC NULLS LAST, e.iteration DESC) AS pick
    FROM explanations e
    LEFT JOIN scores s ON s.explanation_id = e.id AND s.metric = ?
    WHERE e.run_id = ?
"""
"""A run's explanations ranked per feature: pick = 1 is the current one (best score, then latest)."""

CallKey = Literal["feature_id", "explanation_id"]


class StoreReads(StoreConnection):
    """Reads of one run's features, exemplars, explanations, scores and calls."""

    # features and exemplars ---------------------------------------------------------------------

    def has_features(self, run_id: str) -> bool:
        """True when collection for this run is stored."""
        return bool(self.query("SELECT 1 FROM features WHERE run_id = ? LIMIT 1", [run_id]))

    def features(self, run_id: str) -> list[Feature]:
        """Returns the run's features ordered by layer hook and index."""
        rows = self.query("SELECT * FROM features WHERE run_id = ? ORDER BY hook, idx", [run_id])
        return [Feature.from_row(r) for r in rows]

    def feature(self, run_id: str, feature_id: str) -> Feature | None:
        """Returns one feature of the run, or None when the run has no such feature."""
        rows = self.query("SELECT * FROM features WHERE run_id = ? AND id = ?", [run_id, feature_id])
        return Feature.from_row(rows[0]) if rows else None

    def exemplars(self, run_id: str, feature_id: str, split: str | None = None) -> list[Exemplar]:
        """Returns one feature's exemplars (of one split when given) ordered by kind and rank."""
        if split is None:
            rows = self.query(
                "SELECT * FROM exemplars WHERE run_id = ? AND feature_id = ? ORDER BY kind, rank", [run_id, feature_id]
            )
        else:
            rows = self.query(
                "SELECT * FROM exemplars WHERE run_id = ? AND feature_id = ? AND split = ? ORDER BY kind, rank",
                [run_id, feature_id, split],
            )
        return [Exemplar.from_row(r) for r in rows]

    def exemplars_by_feature(self, run_id: str, split: str) -> dict[str, list[Exemplar]]:
        """Returns feature id -> its exemplars of one split (ordered by kind and rank), in one read."""
        rows = self.query(
            "SELECT * FROM exemplars WHERE run_id = ? AND split = ? ORDER BY feature_id, kind, rank", [run_id, split]
        )
        grouped: dict[str, list[Exemplar]] = {}
        for row in rows:
            exemplar = Exemplar.from_row(row)
            grouped.setdefault(exemplar.feature_id, []).append(exemplar)
        return grouped

    # explanations -------------------------------------------------------------------------------

    def explanations(self, run_id: str) -> list[dict[str, Any]]:
        """Returns the run's explanations (rows of `explanations`), oldest first."""
        return self.query("SELECT * FROM explanations WHERE run_id = ? ORDER BY created_at", [run_id])

    def latest_explanation(self, run_id: str, feature_id: str) -> dict[str, Any] | None:
        """Returns one feature's explanation of the highest iteration in the run (the oldest of equals), or
        None when it has none."""
        rows = self.query(
            "SELECT * FROM explanations WHERE run_id = ? AND feature_id = ? ORDER BY iteration DESC, created_at"
            " LIMIT 1",
            [run_id, feature_id],
        )
        return rows[0] if rows else None

    def explanation_ids(self, run_id: str) -> set[str]:
        """Returns the ids of the run's explanations."""
        return {r["id"] for r in self.query("SELECT id FROM explanations WHERE run_id = ?", [run_id])}

    def explained_feature_ids(self, run_id: str) -> set[str]:
        """Returns the features with a first explanation (iteration 0) written by this tool in the run;
        explanations imported from other tools (`autointerp import`) do not count."""
        rows = self.query(
            "SELECT DISTINCT feature_id FROM explanations WHERE run_id = ? AND iteration = 0"
            " AND explainer NOT LIKE 'import:%'",
            [run_id],
        )
        return {r["feature_id"] for r in rows}

    def current_explanations(self, run_id: str, metric: str) -> list[dict[str, Any]]:
        """Returns each feature's current explanation in a run (best `metric` score, then latest
        iteration) with its score and the number of rounds (explanations) behind it."""
        return self.query(f"SELECT * EXCLUDE (pick) FROM ({RANKED_EXPLANATIONS}) WHERE pick = 1", [metric, run_id])

    def current_explainers(self, exclude_run_id: str) -> dict[str, tuple[str, str]]:
        """Returns feature id -> (explainer, prompt hash) of its latest explanation outside one run."""
        rows = self.query(
            """
            SELECT feature_id, arg_max(explainer, created_at) AS explainer,
                   arg_max(prompt_hash, created_at) AS prompt_hash
            FROM explanations WHERE run_id <> ? GROUP BY feature_id
            """,
            [exclude_run_id],
        )
        return {r["feature_id"]: (r["explainer"], r["prompt_hash"]) for r in rows}

    def features_with_review(self, run_id: str, verdict: str) -> list[str]:
        """Returns ids of the run's features with a review of `verdict` on one of their explanations."""
        rows = self.query(
            """
            SELECT DISTINCT e.feature_id FROM reviews r JOIN explanations e ON r.explanation_id = e.id
            WHERE e.run_id = ? AND r.verdict = ? ORDER BY e.feature_id
            """,
            [run_id, verdict],
        )
        return [r["feature_id"] for r in rows]

    # scores and experiments ---------------------------------------------------------------------

    def scores(self, run_id: str, metric: str) -> list[dict[str, Any]]:
        """Returns the run's scores (rows of `scores`) of one metric."""
        return self.query("SELECT * FROM scores WHERE run_id = ? AND metric = ?", [run_id, metric])

    def score_value(self, run_id: str, explanation_id: str, metric: str) -> float | None:
        """Returns an explanation's latest value of `metric` in the run (None: no score, or an undefined one)."""
        rows = self.query(
            "SELECT value FROM scores WHERE run_id = ? AND explanation_id = ? AND metric = ?"
            " ORDER BY created_at DESC LIMIT 1",
            [run_id, explanation_id, metric],
        )
        return rows[0]["value"] if rows else None

    def score_values(self, run_id: str) -> list[tuple[str, str, float | None, str]]:
        """Returns (explanation id, metric, value, scorer model) of every score of the run."""
        rows = self.query("SELECT explanation_id, metric, value, scorer_model FROM scores WHERE run_id = ?", [run_id])
        return [(r["explanation_id"], r["metric"], r["value"], r["scorer_model"]) for r in rows]

    def scored(self, run_id: str) -> set[tuple[str, str]]:
        """Returns the (explanation id, scorer) pairs with a score in the run."""
        rows = self.query("SELECT DISTINCT explanation_id, scorer FROM scores WHERE run_id = ?", [run_id])
        return {(r["explanation_id"], r["scorer"]) for r in rows}

    def score_keys(self, run_id: str) -> set[tuple[str, str, str]]:
        """Returns the (explanation id, scorer, metric) of every score of the run (the table's unique key)."""
        rows = self.query("SELECT explanation_id, scorer, metric FROM scores WHERE run_id = ?", [run_id])
        return {(r["explanation_id"], r["scorer"], r["metric"]) for r in rows}

    def simulation_predictions(self, run_id: str) -> list[tuple[str, str, str, str]]:
        """Returns (feature id, explanation text, scorer model, details JSON) of the run's simulation scores
        that keep per-window predictions (metric `correlation_all`, details not NULL)."""
        rows = self.query(
            """
            SELECT e.feature_id, e.text, s.scorer_model, s.details
            FROM scores s JOIN explanations e ON e.id = s.explanation_id
            WHERE s.run_id = ? AND s.scorer LIKE 'simulation%' AND s.metric = 'correlation_all'
              AND s.details IS NOT NULL
            """,
            [run_id],
        )
        return [(r["feature_id"], r["text"], r["scorer_model"], r["details"]) for r in rows]

    def experiments(self, run_id: str) -> list[dict[str, Any]]:
        """Returns the run's experiments (rows of `experiments`), oldest first."""
        return self.query("SELECT * FROM experiments WHERE run_id = ? ORDER BY created_at", [run_id])

    # LLM calls ----------------------------------------------------------------------------------

    def failed_calls(self, run_id: str, role: str) -> list[dict[str, Any]]:
        """Returns the run's LLM calls (rows of `llm_calls`) of one role that ended in an error."""
        return self.query("SELECT * FROM llm_calls WHERE run_id = ? AND role = ? AND error IS NOT NULL", [run_id, role])

    def ids_with_calls(self, run_id: str, role: str, key: CallKey) -> set[str]:
        """Returns the feature ids or explanation ids (`key`) that have an LLM call of `role` in the run."""
        if key not in ("feature_id", "explanation_id"):
            raise ValueError(f"key must be feature_id or explanation_id, not {key!r}")
        rows = self.query(f"SELECT DISTINCT {key} FROM llm_calls WHERE run_id = ? AND role = ?", [run_id, role])
        return {r[key] for r in rows if r[key] is not None}

    def has_calls(self, run_id: str, explanation_id: str, roles: Iterable[str]) -> bool:
        """True when the explanation has an LLM call of one of `roles` in the run."""
        rows = self.query(
            "SELECT 1 FROM llm_calls WHERE run_id = ? AND explanation_id = ? AND role IN (SELECT unnest(?::VARCHAR[]))"
            " LIMIT 1",
            [run_id, explanation_id, list(roles)],
        )
        return bool(rows)

    def call_counts(self, run_id: str, role: str) -> dict[str, int]:
        """Returns feature id -> how many LLM calls of `role` it has in the run."""
        rows = self.query(
            "SELECT feature_id, count(*) AS n FROM llm_calls WHERE run_id = ? AND role = ? GROUP BY feature_id",
            [run_id, role],
        )
        return {r["feature_id"]: int(r["n"]) for r in rows}
