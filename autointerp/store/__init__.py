"""The DuckDB store, the only place that speaks SQL: schema and migrations, typed reads and writes
(`database.Store`)."""
