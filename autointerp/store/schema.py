"""The schema: numbered migrations, applied in order and recorded in `schema_version`.

A migration is a function named for what it adds; the list is append-only, so a file written by any
earlier autointerp is carried forward step by step.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb

from autointerp.errors import StoreError
from autointerp.records import now
from autointerp.store.exemplar_windows import drop_score_indexes, migrate_exemplars
from autointerp.store.lookups import create_feature_indexes


def _migration_1(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("""
        CREATE TABLE runs (
            id VARCHAR PRIMARY KEY, created_at TIMESTAMPTZ, finished_at TIMESTAMPTZ, status VARCHAR,
            config JSON, config_hash VARCHAR, code_version VARCHAR, flow_run_id VARCHAR, error VARCHAR
        );
        CREATE TABLE features (
            run_id VARCHAR, id VARCHAR, model VARCHAR, hook VARCHAR, kind VARCHAR, idx INTEGER,
            max_activation DOUBLE, mean_activation DOUBLE, density DOUBLE, tokens BIGINT, dead BOOLEAN,
            PRIMARY KEY (run_id, id)
        );
        CREATE TABLE exemplars (
            run_id VARCHAR, feature_id VARCHAR, kind VARCHAR, rank INTEGER, doc_id BIGINT,
            token_offset BIGINT, token_ids INTEGER[], tokens VARCHAR[], activations FLOAT[],
            max_activation FLOAT, split VARCHAR,
            PRIMARY KEY (run_id, feature_id, kind, rank)
        );
        CREATE TABLE explanations (
            id VARCHAR PRIMARY KEY, run_id VARCHAR, feature_id VARCHAR, iteration INTEGER, parent_id VARCHAR,
            explainer VARCHAR, prompt_hash VARCHAR, text VARCHAR, llm_call_id VARCHAR, created_at TIMESTAMPTZ
        );
        CREATE TABLE scores (
            id VARCHAR PRIMARY KEY, run_id VARCHAR, explanation_id VARCHAR, scorer VARCHAR,
            scorer_model VARCHAR, metric VARCHAR, value DOUBLE, details JSON, created_at TIMESTAMPTZ,
            UNIQUE (explanation_id, scorer, metric)
        );
        CREATE TABLE experiments (
            id VARCHAR PRIMARY KEY, run_id VARCHAR, explanation_id VARCHAR, kind VARCHAR, spec JSON,
            predicted JSON, measured JSON, verdict VARCHAR, created_at TIMESTAMPTZ
        );
        CREATE TABLE llm_calls (
            id VARCHAR PRIMARY KEY, run_id VARCHAR, feature_id VARCHAR, explanation_id VARCHAR,
            role VARCHAR, backend VARCHAR,
            model VARCHAR, prompt_hash VARCHAR, request JSON, response VARCHAR, input_tokens INTEGER,
            output_tokens INTEGER, latency_s DOUBLE, cost DOUBLE, error VARCHAR, created_at TIMESTAMPTZ
        );
        CREATE TABLE reviews (
            id VARCHAR PRIMARY KEY, explanation_id VARCHAR, verdict VARCHAR, edited_text VARCHAR,
            reviewer VARCHAR, note VARCHAR, created_at TIMESTAMPTZ
        );
    """)


def _migration_collect_histogram(con: duckdb.DuckDBPyConnection) -> None:
    """Features: a histogram of window maxima (counts per `autointerp.collect.sampler.HISTOGRAM_EDGES` bin)."""
    con.execute("ALTER TABLE features ADD COLUMN window_max_histogram BIGINT[]")


def _migration_distributed_shards(con: duckdb.DuckDBPyConnection) -> None:
    """Sharded runs: each shard's state, and the result parts already ingested (so none twice)."""
    con.execute("""
        CREATE TABLE shards (
            run_id VARCHAR, stage VARCHAR, shard INTEGER, shards INTEGER, status VARCHAR, attempts INTEGER,
            flow_run_id VARCHAR, error VARCHAR, updated_at TIMESTAMPTZ,
            PRIMARY KEY (run_id, stage, shard)
        );
        CREATE TABLE ingested_parts (
            run_id VARCHAR, part VARCHAR, rows BIGINT, ingested_at TIMESTAMPTZ, PRIMARY KEY (run_id, part)
        );
    """)


def _migration_explanation_details(con: duckdb.DuckDBPyConnection) -> None:
    """Explanations: how one was chosen (best-of-k candidates and their scores), as JSON; NULL otherwise."""
    con.execute("ALTER TABLE explanations ADD COLUMN details JSON")


def _migration_feature_evidence(con: duckdb.DuckDBPyConnection) -> None:
    """Features: how many firing (top) and non-firing windows were kept, and why a feature is left out of
    explaining and scoring (NULL: it is not). Rows written before have NULL counts."""
    con.execute("ALTER TABLE features ADD COLUMN firing_windows INTEGER")
    con.execute("ALTER TABLE features ADD COLUMN nonfiring_windows INTEGER")
    con.execute("ALTER TABLE features ADD COLUMN skip_reason VARCHAR")


def _migration_output_evidence(con: duckdb.DuckDBPyConnection) -> None:
    """Output evidence: per feature of a run, the tokens its write direction promotes / suppresses on the
    direct path to the logits and those steering raises / lowers (`autointerp.outputs`), or why it has none."""
    effect = "STRUCT(token VARCHAR, token_id INTEGER, value DOUBLE)[]"
    con.execute(f"""
        CREATE TABLE output_evidence (
            run_id VARCHAR, feature_id VARCHAR, promoted {effect}, suppressed {effect},
            steer_raised {effect}, steer_lowered {effect}, steer_scale DOUBLE, steer_prompts INTEGER,
            no_output_reason VARCHAR, created_at TIMESTAMPTZ,
            PRIMARY KEY (run_id, feature_id)
        )
    """)


def _migration_neighbours(con: duckdb.DuckDBPyConnection) -> None:
    """Neighbours: per feature of a run, its nearest features by write-direction cosine or by co-occurrence
    (`autointerp.neighbours`), rank 1 = nearest; `count` is the co-firing windows (NULL for cosine)."""
    con.execute("""
        CREATE TABLE neighbours (
            run_id VARCHAR, feature_id VARCHAR, kind VARCHAR, rank INTEGER, other_id VARCHAR, value DOUBLE,
            count BIGINT, other_in_run BOOLEAN,
            PRIMARY KEY (run_id, feature_id, kind, rank)
        )
    """)


def _migration_feature_scores(con: duckdb.DuckDBPyConnection) -> None:
    """Feature scores: numbers of explanation-free scorers (the intruder test), one row per feature and metric."""
    con.execute("""
        CREATE TABLE feature_scores (
            id VARCHAR PRIMARY KEY, run_id VARCHAR, feature_id VARCHAR, scorer VARCHAR, scorer_model VARCHAR,
            metric VARCHAR, value DOUBLE, details JSON, created_at TIMESTAMPTZ,
            UNIQUE (run_id, feature_id, scorer, metric)
        );
    """)


def _migration_exemplar_windows(con: duckdb.DuckDBPyConnection) -> None:
    """Exemplars at scale: each window's tokens once per run (`exemplar_windows`), each feature's rows without
    a primary-key index (`exemplar_rows`), and `exemplars` a view over both with the old columns; `scores`
    without its primary-key and unique indexes (see `autointerp.store.exemplar_windows`)."""
    migrate_exemplars(con)
    drop_score_indexes(con)


def _migration_feature_lookups(con: duckdb.DuckDBPyConnection) -> None:
    """Indexes for reading one feature without scanning the run (the review app's feature page): by feature
    id on features, explanations, exemplar rows, neighbours, output evidence, feature scores and calls; by
    explanation id on reviews, experiments and calls; by key on exemplar windows (`autointerp.store.lookups`)."""
    create_feature_indexes(con)


MIGRATIONS: list[Callable[[duckdb.DuckDBPyConnection], None]] = [
    _migration_1,
    _migration_collect_histogram,
    _migration_distributed_shards,
    _migration_explanation_details,
    _migration_feature_evidence,
    _migration_output_evidence,
    _migration_neighbours,
    _migration_feature_scores,
    _migration_exemplar_windows,
    _migration_feature_lookups,
]
"""Ordered schema steps; step i brings the schema to version i + 1. Append, never edit."""

SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(con: duckdb.DuckDBPyConnection) -> int | None:
    """Returns the highest applied schema version, or None when the file has no schema_version table."""
    found = con.execute(
        "SELECT 1 FROM information_schema.tables WHERE table_name = 'schema_version' AND table_schema = 'main'"
    ).fetchone()
    if not found:
        return None
    row = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    return int(row[0]) if row else 0


def apply_migrations(con: duckdb.DuckDBPyConnection, path: Path) -> int:
    """Applies the pending migrations on `con` (inside the caller's transaction), recording each in
    `schema_version`; returns SCHEMA_VERSION. Raises StoreError when the file at `path` has a newer schema."""
    con.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ)")
    current = schema_version(con) or 0
    if current > SCHEMA_VERSION:
        raise StoreError(
            f"{path} has schema version {current}, newer than this autointerp ({SCHEMA_VERSION}); upgrade autointerp"
        )
    for version in range(current + 1, SCHEMA_VERSION + 1):
        MIGRATIONS[version - 1](con)
        con.execute("INSERT INTO schema_version VALUES (?, ?)", [version, now()])
    return SCHEMA_VERSION
