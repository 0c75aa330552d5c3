"""Writes: a run's lifecycle, its collection (features and exemplars) and each stage's finished rows,
each in one transaction."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from autointerp.records import Exemplar, Feature, Rows, now
from autointerp.store.connection import StoreConnection
from autointerp.store.exemplar_windows import delete_run


class StoreWrites(StoreConnection):
    """Writes of runs and their rows."""

    def start_run(
        self, run_id: str, config: dict[str, Any], config_hash: str, code_version: str, flow_run_id: str | None
    ) -> bool:
        """Records a run as running, under `config` (a resume records the config it resumes with); returns True
        when it already existed (a resume)."""
        with self.transaction() as con:
            existing = con.execute("SELECT 1 FROM runs WHERE id = ?", [run_id]).fetchone()
            if existing:
                con.execute(
                    "UPDATE runs SET status = 'running', finished_at = NULL, error = NULL, flow_run_id = ?, "
                    "config = ?, config_hash = ? WHERE id = ?",
                    [flow_run_id, json.dumps(config), config_hash, run_id],
                )
                return True
            con.execute(
                "INSERT INTO runs VALUES (?, ?, NULL, 'running', ?, ?, ?, ?, NULL)",
                [run_id, now(), json.dumps(config), config_hash, code_version, flow_run_id],
            )
            return False

    def finish_run(self, run_id: str, status: str, error: str | None = None) -> None:
        """Marks a run finished with `status` (completed or failed)."""
        with self.transaction() as con:
            con.execute(
                "UPDATE runs SET status = ?, finished_at = ?, error = ? WHERE id = ?",
                [status, now(), error, run_id],
            )

    def interrupt_run(self, run_id: str, reason: str) -> bool:
        """Marks a running run `interrupted` (stopped by a signal; rerunning resumes it); returns whether it was
        running (a run that already finished keeps its status)."""
        with self.transaction() as con:
            changed = con.execute(
                "UPDATE runs SET status = 'interrupted', finished_at = ?, error = ? "
                "WHERE id = ? AND status = 'running'",
                [now(), reason, run_id],
            ).fetchall()
        return bool(changed and changed[0][0])

    def write_collection(
        self,
        run_id: str,
        features: Sequence[Feature | dict[str, Any]],
        exemplars: Sequence[Exemplar | dict[str, Any]] | pa.Table,
    ) -> None:
        """Stores a run's features and exemplars (records, row dicts, or an Arrow table of `exemplars` rows) in
        one transaction (replacing any partial rows)."""
        with self.transaction() as con:
            delete_run(con, run_id)
            con.execute("DELETE FROM features WHERE run_id = ?", [run_id])
            self.insert_rows(con, "features", [f if isinstance(f, dict) else f.to_row() for f in features])
            if isinstance(exemplars, pa.Table):
                self.insert_table(con, "exemplars", exemplars)
            else:
                self.insert_rows(con, "exemplars", [e if isinstance(e, dict) else e.to_row() for e in exemplars])

    def write_results(self, rows: Rows | dict[str, list[dict[str, Any]]]) -> None:
        """Stores records (or table -> row dicts) in one transaction: finished features whole, with
        their LLM calls."""
        rows_by_table = rows.by_table() if isinstance(rows, Rows) else rows
        with self.transaction() as con:
            for table, table_rows in rows_by_table.items():
                self.insert_rows(con, table, table_rows)

    def keep_only_features(self, feature_ids: Sequence[str]) -> None:
        """Deletes every feature row whose id is not in `feature_ids`, in one transaction (a shard's own
        store keeps only its share before its explain stage runs)."""
        with self.transaction() as con:
            con.execute("CREATE TEMP TABLE keep AS SELECT unnest(?::VARCHAR[]) AS id", [sorted(set(feature_ids))])
            con.execute("DELETE FROM features WHERE id NOT IN (SELECT id FROM keep)")
