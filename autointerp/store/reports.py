"""Reports over runs: progress, costs and the explanation table the CLI and review app show."""

from __future__ import annotations

import json
from typing import Any

from autointerp.store.connection import StoreConnection
from autointerp.store.reads import RANKED_EXPLANATIONS


class RunReports(StoreConnection):
    """Reads that summarise runs (counts, spending, tables), each one query."""

    def runs(self) -> list[dict[str, Any]]:
        """Returns every run, newest first, with counts of features and explanations."""
        return self.query("""
            SELECT r.id, r.created_at, r.finished_at, r.status, r.error,
                   (SELECT count(*) FROM features f WHERE f.run_id = r.id) AS features,
                   (SELECT count(*) FROM explanations e WHERE e.run_id = r.id) AS explanations,
                   (SELECT count(*) FROM llm_calls c WHERE c.run_id = r.id) AS llm_calls,
                   (SELECT coalesce(sum(cost), 0) FROM llm_calls c WHERE c.run_id = r.id) AS cost
            FROM runs r ORDER BY r.created_at DESC
        """)

    def latest_run_id(self) -> str | None:
        """Returns the id of the most recently created run, or None."""
        rows = self.query("SELECT id FROM runs ORDER BY created_at DESC LIMIT 1")
        return rows[0]["id"] if rows else None

    def run_exists(self, run_id: str) -> bool:
        """True when the file holds a run with this id."""
        return bool(self.query("SELECT 1 FROM runs WHERE id = ?", [run_id]))

    def stored_config(self, run_id: str) -> dict[str, Any] | None:
        """Returns the config a run was last started or resumed with (as JSON data), or None when there is no
        such run."""
        rows = self.query("SELECT config FROM runs WHERE id = ?", [run_id])
        if not rows:
            return None
        config = rows[0]["config"]
        return json.loads(config) if isinstance(config, str) else (config or {})

    def llm_spending(self, run_id: str) -> tuple[int, float]:
        """Returns the (input + output tokens, USD cost) of the run's LLM calls so far."""
        rows = self.query(
            "SELECT coalesce(sum(input_tokens + output_tokens), 0) AS tokens, coalesce(sum(cost), 0) AS cost"
            " FROM llm_calls WHERE run_id = ? AND NOT coalesce(json_extract(request, '$.cached')::BOOLEAN, false)",
            [run_id],
        )
        return int(rows[0]["tokens"]), float(rows[0]["cost"])

    def llm_costs(self, run_id: str) -> list[dict[str, Any]]:
        """Returns the run's LLM calls summed per role, backend and model: calls, errors, cached answers,
        and the tokens, cost and mean latency of the calls actually made (cached answers excluded)."""
        return self.query(
            """
            WITH c AS (
                SELECT *, coalesce(json_extract(request, '$.cached')::BOOLEAN, false) AS cached FROM llm_calls
                WHERE run_id = ?
            )
            SELECT role, backend, model, count(*) AS calls, count(error) AS errors,
                   count(*) FILTER (WHERE cached) AS cached,
                   coalesce(sum(input_tokens) FILTER (WHERE NOT cached), 0) AS input_tokens,
                   coalesce(sum(output_tokens) FILTER (WHERE NOT cached), 0) AS output_tokens,
                   coalesce(sum(cost), 0) AS cost, avg(latency_s) FILTER (WHERE NOT cached) AS mean_latency_s
            FROM c GROUP BY role, backend, model ORDER BY role, backend, model
            """,
            [run_id],
        )

    def explanation_table(self, run_id: str, metric: str) -> list[dict[str, Any]]:
        """Returns (feature, current explanation, score, density, max, experiments, versions) rows
        of a run, best score first."""
        return self.query(
            f"""
            WITH ranked AS ({RANKED_EXPLANATIONS})
            SELECT f.id AS feature_id, c.text AS explanation, c.score, c.versions,
                   f.density, f.max_activation,
                   (SELECT count(*) FROM experiments x JOIN explanations e2 ON x.explanation_id = e2.id
                    WHERE e2.feature_id = f.id AND e2.run_id = f.run_id) AS experiments
            FROM features f
            LEFT JOIN ranked c ON c.feature_id = f.id AND c.pick = 1
            WHERE f.run_id = ?
            ORDER BY c.score DESC NULLS LAST, f.idx
            """,
            [metric, run_id, run_id],
        )

    def run_progress(self) -> list[dict[str, Any]]:
        """Returns every run, newest first, with progress, cost so far and failed-call counts."""
        return self.query("""
            SELECT r.id, r.created_at, r.finished_at, r.status, r.error, r.config_hash,
                   coalesce(f.features, 0) AS features, coalesce(f.live, 0) AS live_features,
                   coalesce(f.skipped, 0) AS skipped_features, coalesce(f.few_nonfiring, 0) AS few_nonfiring,
                   coalesce(e.explained, 0) AS explained, coalesce(s.scored, 0) AS scored,
                   coalesce(x.experiments, 0) AS experiments, coalesce(c.calls, 0) AS llm_calls,
                   coalesce(c.failed, 0) AS failed_calls, coalesce(c.cost, 0) AS cost,
                   coalesce(c.input_tokens, 0) AS input_tokens, coalesce(c.output_tokens, 0) AS output_tokens
            FROM runs r
            LEFT JOIN (SELECT run_id, count(*) AS features,
                              count(*) FILTER (WHERE NOT dead AND skip_reason IS NULL) AS live,
                              count(*) FILTER (WHERE NOT dead AND skip_reason IS NOT NULL) AS skipped,
                              count(*) FILTER (WHERE NOT dead AND skip_reason IS NULL
                                               AND nonfiring_windows < nonfiring_wanted) AS few_nonfiring
                       FROM features
                       LEFT JOIN (SELECT id AS rid,
                                         coalesce(try_cast(config->>'$.collect.random_windows' AS INTEGER), 0)
                                             AS nonfiring_wanted
                                  FROM runs) w ON w.rid = features.run_id
                       GROUP BY run_id) f ON f.run_id = r.id
            LEFT JOIN (SELECT run_id, count(DISTINCT feature_id) AS explained FROM explanations GROUP BY run_id) e
                   ON e.run_id = r.id
            LEFT JOIN (SELECT run_id, count(DISTINCT explanation_id) AS scored FROM scores GROUP BY run_id) s
                   ON s.run_id = r.id
            LEFT JOIN (SELECT run_id, count(*) AS experiments FROM experiments GROUP BY run_id) x ON x.run_id = r.id
            LEFT JOIN (SELECT run_id, count(*) AS calls, count(*) FILTER (WHERE error IS NOT NULL) AS failed,
                              sum(cost) AS cost, sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens
                       FROM llm_calls GROUP BY run_id) c ON c.run_id = r.id
            ORDER BY r.created_at DESC
        """)
