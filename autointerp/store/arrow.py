"""Arrow transfer: a run's rows out as Arrow tables and result parts in, each in one transaction (what
sharded runs move between the campaign's file and each shard's own)."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from autointerp.store.connection import StoreConnection


class ArrowTransfer(StoreConnection):
    """Bulk rows in and out as Arrow tables."""

    def export_run(self, run_id: str, tables: Sequence[str]) -> dict[str, pa.Table]:
        """Returns a run's rows of each table as Arrow (what a shard's own store starts from)."""
        with self.connect(read_only=True) as con:
            out = {}
            for table in tables:
                if table == "reviews":
                    sql = "SELECT r.* FROM reviews r JOIN explanations e ON r.explanation_id = e.id WHERE e.run_id = ?"
                else:
                    sql = f"SELECT * FROM {table} WHERE {'id' if table == 'runs' else 'run_id'} = ?"
                out[table] = con.sql(sql, params=[run_id]).to_arrow_table()
            return out

    def load_tables(self, rows_by_table: dict[str, pa.Table]) -> None:
        """Inserts Arrow tables as they are, in one transaction (a shard's own store, from an export)."""
        with self.transaction() as con:
            for table, arrow_rows in rows_by_table.items():
                self.insert_table(con, table, arrow_rows)

    def rows_not_in(self, run_id: str, table: str, known_ids: Sequence[str]) -> pa.Table:
        """Returns a run's rows of `table` whose id is not among `known_ids` (what a shard added)."""
        with self.connect(read_only=True) as con:
            con.register("_known", pa.table({"id": pa.array(list(known_ids), pa.string())}))
            return con.sql(
                f"SELECT * FROM {table} WHERE run_id = ? AND id NOT IN (SELECT id FROM _known)", params=[run_id]
            ).to_arrow_table()
