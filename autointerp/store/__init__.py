"""The DuckDB store, the only place that speaks SQL: schema and migrations (`schema`), connections
(`connection`), typed reads that return records (`reads`, `reports`), writes (`writes`), Arrow transfer
(`arrow`), the shard ledger (`shards`) and the LLM response cache's table (`response_cache`); all of it
behind `Store` (`database.Store`)."""

from autointerp.store.database import SCHEMA_VERSION, Store

__all__ = ["SCHEMA_VERSION", "Store"]
