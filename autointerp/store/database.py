"""The DuckDB store: the one class the rest of autointerp talks to. The only package that speaks SQL.

`Store` is assembled from one module per responsibility: the schema and its migrations (`schema`),
short locked connections (`connection`), typed reads (`reads`), run reports (`reports`), writes
(`writes`), Arrow transfer (`arrow`) and the shard ledger (`shards`).
"""

from __future__ import annotations

from autointerp.records import now
from autointerp.store.arrow import ArrowTransfer
from autointerp.store.connection import LOCK_WAIT_SECONDS
from autointerp.store.feature_scores import FeatureScoreStore
from autointerp.store.neighbours import NeighbourStore
from autointerp.store.outputs import OutputEvidenceStore
from autointerp.store.reads import StoreReads
from autointerp.store.reports import RunReports
from autointerp.store.schema import MIGRATIONS, SCHEMA_VERSION
from autointerp.store.shards import ShardLedger
from autointerp.store.writes import StoreWrites

__all__ = ["LOCK_WAIT_SECONDS", "MIGRATIONS", "SCHEMA_VERSION", "Store", "now"]


class Store(
    StoreReads,
    RunReports,
    StoreWrites,
    ArrowTransfer,
    NeighbourStore,
    OutputEvidenceStore,
    FeatureScoreStore,
    ShardLedger,
):
    """A DuckDB file holding every run; each method opens, works in one transaction and closes.

    The first connection of a Store checks the file's schema version: a file written by a newer
    autointerp is refused on every command (reads included), not only on `run`. The shard ledger of
    sharded runs (`set_shard`, `shards`, `ingest_part`, ...) is `ShardLedger`'s; output evidence
    (`write_output_evidence`, `output_evidence`) is `OutputEvidenceStore`'s.
    """
