"""Neighbours: each feature's nearest features of a run (`autointerp.neighbours`), written per kind in one
transaction and read back as `Neighbour` records, nearest first."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from autointerp.neighbours.records import Neighbour, NeighbourKind
from autointerp.store.connection import StoreConnection


class NeighbourStore(StoreConnection):
    """Reads and writes of the `neighbours` table."""

    def write_neighbours(
        self, run_id: str, items: Iterable[Neighbour], kinds: Sequence[NeighbourKind] | None = None
    ) -> int:
        """Replaces the run's neighbours of `kinds` (default: the kinds present in `items`) with `items`, in one
        transaction; returns how many rows were written. Writing the same items again changes nothing."""
        rows = [n.to_row(run_id) for n in items]
        replace = sorted(set(kinds) if kinds is not None else {r["kind"] for r in rows})
        with self.transaction() as con:
            for kind in replace:
                con.execute("DELETE FROM neighbours WHERE run_id = ? AND kind = ?", [run_id, kind])
            return self.insert_rows(con, "neighbours", rows)

    def neighbours(self, run_id: str, feature: str, kind: NeighbourKind | None = None) -> list[Neighbour]:
        """Returns one feature's neighbours (of one kind when given), nearest first (by kind, then rank)."""
        sql = "SELECT * FROM neighbours WHERE run_id = ? AND feature_id = ?"
        params: list[object] = [run_id, feature]
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        return [Neighbour.from_row(r) for r in self.query(sql + " ORDER BY kind, rank", params)]

    def neighbours_by_feature(self, run_id: str, kind: NeighbourKind | None = None) -> dict[str, list[Neighbour]]:
        """Returns feature id -> its neighbours (of one kind when given), nearest first, for the whole run in one
        read (what export and the hard scorers use)."""
        sql = "SELECT * FROM neighbours WHERE run_id = ?"
        params: list[object] = [run_id]
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        grouped: dict[str, list[Neighbour]] = {}
        for row in self.query(sql + " ORDER BY feature_id, kind, rank", params):
            neighbour = Neighbour.from_row(row)
            grouped.setdefault(neighbour.feature, []).append(neighbour)
        return grouped

    def has_neighbours(self, run_id: str, kind: NeighbourKind) -> bool:
        """True when the run's neighbours of `kind` are stored (the neighbour step is then done)."""
        return bool(self.query("SELECT 1 FROM neighbours WHERE run_id = ? AND kind = ? LIMIT 1", [run_id, kind]))
