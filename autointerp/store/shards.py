"""The shard ledger of sharded runs: each shard's status and attempts (`shards`), and the result parts
already ingested (`ingested_parts`, so a part is never ingested twice).

`ShardLedger` is a mixin of `autointerp.store.database.Store`: its methods use the store's
`transaction()` and `query()`. The tables are created by the store's migrations.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from autointerp.records import now
from autointerp.store.exemplar_windows import insert_exemplars

if TYPE_CHECKING:
    import duckdb


class ShardLedger:
    """Reads and writes of the `shards` and `ingested_parts` tables (mixed into the Store)."""

    if TYPE_CHECKING:  # provided by the Store

        def transaction(self) -> AbstractContextManager[duckdb.DuckDBPyConnection]: ...

        def query(self, sql: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]: ...

    def set_shard(
        self,
        run_id: str,
        stage: str,
        shard: int,
        shards: int,
        status: str,
        attempts: int,
        flow_run_id: str | None = None,
        error: str | None = None,
    ) -> None:
        """Records a shard's status (pending, running, done, incomplete, failed) and how many times it
        was started."""
        with self.transaction() as con:
            con.execute(
                "INSERT OR REPLACE INTO shards VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [run_id, stage, shard, shards, status, attempts, flow_run_id, error, now()],
            )

    def claim_attempt(self, run_id: str, stage: str, shard: int, shards: int, at_least: int = 1) -> int:
        """Records a new attempt of a shard as `running` and returns its number: one more than the
        attempts stored (and at least `at_least`), read and written in one transaction, so two parents
        of one run never start the same attempt (each attempt writes a folder of its own)."""
        with self.transaction() as con:
            row = con.execute(
                "SELECT attempts, shards FROM shards WHERE run_id = ? AND stage = ? AND shard = ?",
                [run_id, stage, shard],
            ).fetchone()
            stored = int(row[0] or 0) if row else 0
            attempt = max(stored + 1, at_least)
            con.execute(
                "INSERT OR REPLACE INTO shards VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [run_id, stage, shard, shards, "running", attempt, None, None, now()],
            )
            return attempt

    def shards(self, run_id: str, stage: str | None = None) -> list[dict[str, Any]]:
        """Returns a run's shards (of one stage), by stage and number."""
        if stage is None:
            return self.query("SELECT * FROM shards WHERE run_id = ? ORDER BY stage, shard", [run_id])
        return self.query("SELECT * FROM shards WHERE run_id = ? AND stage = ? ORDER BY shard", [run_id, stage])

    def shard_progress(self) -> dict[str, dict[str, int]]:
        """Returns run id -> shard status (running, done, incomplete, failed) -> how many shards, over
        every stage of the sharded runs, plus `restarts`: attempts beyond each shard's first (a file
        from before sharded runs has none)."""
        has_table = self.query("SELECT 1 FROM information_schema.tables WHERE table_name = 'shards'")
        if not has_table:
            return {}
        progress: dict[str, dict[str, int]] = {}
        rows = self.query(
            "SELECT run_id, status, count(*) AS n, sum(greatest(coalesce(attempts, 0) - 1, 0)) AS restarts "
            "FROM shards GROUP BY run_id, status"
        )
        for row in rows:
            counts = progress.setdefault(row["run_id"], {"restarts": 0})
            counts[row["status"]] = int(row["n"])
            counts["restarts"] += int(row["restarts"] or 0)
        return progress

    def ingest_part(
        self,
        run_id: str,
        part: str,
        rows_by_table: dict[str, pa.Table],
        shard: tuple[str, int, str] | None = None,
    ) -> int:
        """Inserts a result part's rows (table -> Arrow table) in one transaction, once: a part already
        ingested adds nothing, and rows whose id is stored already are skipped. `shard` (stage, number,
        status) is recorded in the same transaction. Returns the rows inserted."""
        with self.transaction() as con:
            if con.execute("SELECT 1 FROM ingested_parts WHERE run_id = ? AND part = ?", [run_id, part]).fetchone():
                return 0
            inserted = 0
            for table, arrow_rows in rows_by_table.items():
                if arrow_rows.num_rows == 0:
                    continue
                if table == "exemplars":
                    inserted += insert_exemplars(con, arrow_rows)
                    continue
                columns = ", ".join(arrow_rows.column_names)
                con.register("_incoming_part", arrow_rows)
                try:
                    new = "SELECT * FROM _incoming_part"
                    if "id" in arrow_rows.column_names:
                        new += f" WHERE id NOT IN (SELECT id FROM {table})"
                    row = con.execute(f"SELECT count(*) FROM ({new})").fetchone()
                    inserted += int(row[0]) if row else 0
                    con.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM ({new})")
                finally:
                    con.unregister("_incoming_part")
            con.execute("INSERT INTO ingested_parts VALUES (?, ?, ?, ?)", [run_id, part, inserted, now()])
            if shard is not None:
                stage, number, status = shard
                con.execute(
                    "UPDATE shards SET status = ?, updated_at = ? WHERE run_id = ? AND stage = ? AND shard = ?",
                    [status, now(), run_id, stage, number],
                )
            return inserted
