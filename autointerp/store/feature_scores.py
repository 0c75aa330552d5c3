"""Reads of the harder tests: feature scores of explanation-free scorers (the intruder test), one per feature
and metric, and which features have hard-negative exemplars."""

from __future__ import annotations

import json
from typing import Any

from autointerp.store.connection import StoreConnection


class FeatureScoreStore(StoreConnection):
    """Reads of the `feature_scores` table (rows are written with `write_results`, as `FeatureScore` records)."""

    def feature_scored(self, run_id: str) -> set[tuple[str, str]]:
        """Returns the (feature id, scorer) pairs of the run that have feature scores (done: not scored again)."""
        rows = self.query("SELECT DISTINCT feature_id, scorer FROM feature_scores WHERE run_id = ?", [run_id])
        return {(r["feature_id"], r["scorer"]) for r in rows}

    def feature_scores(self, run_id: str, metric: str) -> dict[str, tuple[float | None, dict[str, Any]]]:
        """Returns feature id -> (value, details) of one metric of the run's feature scores."""
        rows = self.query(
            "SELECT feature_id, value, details FROM feature_scores WHERE run_id = ? AND metric = ?", [run_id, metric]
        )
        return {
            r["feature_id"]: (r["value"], json.loads(r["details"]) if isinstance(r["details"], str) else r["details"])
            for r in rows
        }

    def features_with_exemplars(self, run_id: str, kind: str) -> set[str]:
        """Returns the ids of the run's features that have exemplars of `kind` (e.g. `neighbour`: hard
        negatives already computed)."""
        rows = self.query("SELECT DISTINCT feature_id FROM exemplars WHERE run_id = ? AND kind = ?", [run_id, kind])
        return {r["feature_id"] for r in rows}
