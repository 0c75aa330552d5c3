"""The neighbour record: one of a feature's nearest features, by write-direction cosine or by co-occurrence.

Torch-free: the store, the review app and the scorers import it without loading a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Self, get_args

NeighbourKind = Literal["cosine", "cooccurrence"]
"""How nearness is measured: `cosine` of the write directions, or `cooccurrence` of firing windows."""

NEIGHBOUR_KINDS: tuple[NeighbourKind, ...] = get_args(NeighbourKind)


@dataclass(frozen=True)
class Neighbour:
    """One neighbour of a feature of a run (a row of `neighbours`).

    `feature` and `other` are feature ids (`smollm2-135m/mlp.12/417`), the same ids as `Feature.id`.
    `value` is, for `cosine`, the cosine similarity of the two write directions (-1..1; neighbours are the
    largest cosines, not the largest magnitudes); for `cooccurrence`, the Jaccard fraction of windows where
    both fire among windows where either fires: count / (fired(feature) + fired(other) - count), 0..1.
    """

    feature: str
    """The feature whose neighbour this is (a feature id of the run)."""
    other: str
    """The neighbour's feature id."""
    kind: NeighbourKind
    value: float
    """Cosine similarity (cosine) or Jaccard fraction of co-firing windows (cooccurrence)."""
    rank: int
    """1 = nearest."""
    count: int | None = None
    """cooccurrence: windows in which both fire; None for cosine."""
    other_in_run: bool = True
    """True when `other` is itself a feature of the run (has exemplars and a feature page); a cosine
    neighbour may be any feature of the same dictionary or layer."""

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Self:
        """Returns the neighbour held in a row of `neighbours`."""
        return cls(
            feature=row["feature_id"],
            other=row["other_id"],
            kind=row["kind"],
            value=float(row["value"]),
            rank=int(row["rank"]),
            count=None if row["count"] is None else int(row["count"]),
            other_in_run=bool(row["other_in_run"]),
        )

    def to_row(self, run_id: str) -> dict[str, Any]:
        """Returns the neighbour as a row of `neighbours` for run `run_id`."""
        return {
            "run_id": run_id,
            "feature_id": self.feature,
            "kind": self.kind,
            "rank": self.rank,
            "other_id": self.other,
            "value": self.value,
            "count": self.count,
            "other_in_run": self.other_in_run,
        }
