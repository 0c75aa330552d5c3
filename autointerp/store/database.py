"""The DuckDB store: schema, migrations, reads and writes. The only module that speaks SQL.

Connections are short (open, one transaction, close) and retried while another process
holds the file lock, so a flow and the review app can share one file. Bulk rows go in
through Arrow.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from autointerp.errors import StoreError
from autointerp.records import Rows, now
from autointerp.store.shards import ShardLedger

log = logging.getLogger(__name__)

LOCK_WAIT_SECONDS = 60.0


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


_RANKED_EXPLANATIONS = """
    SELECT e.*, s.value AS score,
           count(*) OVER (PARTITION BY e.feature_id) AS versions,
           row_number() OVER (PARTITION BY e.feature_id ORDER BY s.value DESC NULLS LAST, e.iteration DESC) AS pick
    FROM explanations e
    LEFT JOIN scores s ON s.explanation_id = e.id AND s.metric = ?
    WHERE e.run_id = ?
"""
"""A run's explanations ranked per feature: pick = 1 is the current one (best score, then latest)."""


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


MIGRATIONS: list[Callable[[duckdb.DuckDBPyConnection], None]] = [
    _migration_1,
    _migration_collect_histogram,
    _migration_distributed_shards,
    _migration_explanation_details,
    _migration_feature_evidence,
]
"""Ordered schema steps; step i brings the schema to version i + 1. Append, never edit."""

SCHEMA_VERSION = len(MIGRATIONS)


def _schema_version(con: duckdb.DuckDBPyConnection) -> int | None:
    """Returns the highest applied schema version, or None when the file has no schema_version table."""
    found = con.execute(
        "SELECT 1 FROM information_schema.tables WHERE table_name = 'schema_version' AND table_schema = 'main'"
    ).fetchone()
    if not found:
        return None
    row = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    return int(row[0]) if row else 0


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc)
    return "lock" in text.lower() and ("Conflicting" in text or "Could not set lock" in text)


class Store(ShardLedger):
    """A DuckDB file holding every run; each method opens, works in one transaction and closes. The
    shard ledger of sharded runs (`set_shard`, `shards`, `ingest_part`, ...) is `ShardLedger`'s.

    The first connection of a Store checks the file's schema version: a file written by a newer
    autointerp is refused on every command (reads included), not only on `run`.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._schema_checked = False

    def _make_parent(self) -> None:
        """Creates the file's folder; raises StoreError when a part of that path is a file."""
        parent = self.path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            blocking = next((p for p in [parent, *parent.parents] if p.exists() and not p.is_dir()), parent)
            raise StoreError(
                f"cannot create the database {self.path}: {blocking} is a file, not a folder; set store.path / --db"
            ) from None
        except OSError as exc:
            raise StoreError(f"cannot create the folder {parent}: {exc.strerror or exc}") from None

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """Yields a connection, waiting up to LOCK_WAIT_SECONDS while another process holds the file;
        raises StoreError when the path is unusable or the file's schema is newer than this code."""
        if read_only and not self.path.exists():
            raise StoreError(f"no database at {self.path}; run `autointerp run` first or pass --db")
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a folder, not a DuckDB file; set store.path / --db to a file")
        self._make_parent()
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        delay = 0.01
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=read_only)
                break
            except duckdb.IOException as exc:
                if not _is_lock_error(exc) or time.monotonic() > deadline:
                    raise StoreError(f"cannot open {self.path}: {str(exc).splitlines()[0]}") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
            except duckdb.Error as exc:
                raise StoreError(f"cannot open {self.path}: {str(exc).splitlines()[0]}") from None
        try:
            if not self._schema_checked:
                self._check_schema(con, require=read_only)
            yield con
        finally:
            con.close()

    def _check_schema(self, con: duckdb.DuckDBPyConnection, require: bool) -> None:
        """Raises StoreError when the file's schema is newer than SCHEMA_VERSION, or (with `require`)
        when it has no schema at all (not an autointerp database)."""
        version = _schema_version(con)
        if version is None:
            if require:
                raise StoreError(f"{self.path} is not an autointerp database (it has no schema_version table)")
            return  # a new file: `migrate` creates the schema
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this autointerp ({SCHEMA_VERSION}); "
                "upgrade autointerp"
            )
        self._schema_checked = True

    def check_schema(self) -> int | None:
        """Returns the file's schema version (None when there is no file yet), creating nothing; raises
        StoreError when the version is newer than this code or the path cannot hold a database."""
        if not self.path.exists():
            existing = next((p for p in self.path.parents if p.exists()), None)
            if existing is not None and not existing.is_dir():
                raise StoreError(
                    f"cannot create the database {self.path}: {existing} is a file, not a folder; set store.path / --db"
                )
            return None
        with self.connect(read_only=True) as con:
            return _schema_version(con)

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Yields a connection inside BEGIN; commits on success, rolls back on any error."""
        with self.connect() as con:
            con.begin()
            try:
                yield con
            except BaseException:
                con.rollback()
                raise
            con.commit()

    # schema -----------------------------------------------------------------------------------

    def migrate(self) -> int:
        """Applies pending migrations; returns the schema version now in the file."""
        with self.transaction() as con:
            con.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ)"
            )
            current = _schema_version(con) or 0
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path} has schema version {current}, newer than this autointerp "
                    f"({SCHEMA_VERSION}); upgrade autointerp"
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                MIGRATIONS[version - 1](con)
                con.execute("INSERT INTO schema_version VALUES (?, ?)", [version, now()])
            return SCHEMA_VERSION

    # generic helpers ----------------------------------------------------------------------------

    @staticmethod
    def insert_rows(con: duckdb.DuckDBPyConnection, table: str, rows: Sequence[dict[str, Any]]) -> int:
        """Inserts rows (dicts with the same keys) through Arrow; returns how many."""
        if not rows:
            return 0
        arrow_rows = pa.Table.from_pylist(list(rows))
        columns = ", ".join(arrow_rows.column_names)
        con.register("_incoming_rows", arrow_rows)
        try:
            con.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM _incoming_rows")
        finally:
            con.unregister("_incoming_rows")
        return len(rows)

    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        """Returns the rows of a read query as dicts (a short read-only connection)."""
        with self.connect(read_only=True) as con:
            cursor = con.execute(sql, list(params or []))
            names = [d[0] for d in cursor.description or []]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    # runs ---------------------------------------------------------------------------------------

    def start_run(
        self, run_id: str, config: dict[str, Any], config_hash: str, code_version: str, flow_run_id: str | None
    ) -> bool:
        """Records a run as running; returns True when it already existed (a resume)."""
        with self.transaction() as con:
            existing = con.execute("SELECT 1 FROM runs WHERE id = ?", [run_id]).fetchone()
            if existing:
                con.execute(
                    "UPDATE runs SET status = 'running', finished_at = NULL, error = NULL, flow_run_id = ? "
                    "WHERE id = ?",
                    [flow_run_id, run_id],
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

    def runs(self) -> list[dict[str, Any]]:
        """Returns every run, newest first, with counts of features and explanations."""
        return self.query("""
            SELECT r.id, r.created_at, r.finished_at, r.status, r.error,
                   (SELECT count(*) FROM features f WHERE f.run_id = r.id) AS features,
                   (SELECT count(*) FROM explanations e WHERE e.run_id = r.id) AS explanations,
                   (SELECT count(*) FROM llm_calls c WHERE c.run_id = r.id) AS llm_calls,
                   (SELECT coalesce(sum(cost), 0) FROM llm_calls c WHERE c.run_id = r.id) AS cost
            FROM runs r ORDER BY r.created_at DESC
        """)

    def latest_run_id(self) -> str | None:
        """Returns the id of the most recently created run, or None."""
        rows = self.query("SELECT id FROM runs ORDER BY created_at DESC LIMIT 1")
        return rows[0]["id"] if rows else None

    # stage results --------------------------------------------------------------------------------

    def has_features(self, run_id: str) -> bool:
        """True when collection for this run is stored."""
        return bool(self.query("SELECT 1 FROM features WHERE run_id = ? LIMIT 1", [run_id]))

    def write_collection(self, run_id: str, features: list[dict[str, Any]], exemplars: list[dict[str, Any]]) -> None:
        """Stores a run's features and exemplars in one transaction (replacing any partial rows)."""
        with self.transaction() as con:
            con.execute("DELETE FROM exemplars WHERE run_id = ?", [run_id])
            con.execute("DELETE FROM features WHERE run_id = ?", [run_id])
            self.insert_rows(con, "features", features)
            self.insert_rows(con, "exemplars", exemplars)

    def write_results(self, rows: Rows | dict[str, list[dict[str, Any]]]) -> None:
        """Stores records (or table -> row dicts) in one transaction: finished features whole, with
        their LLM calls."""
        rows_by_table = rows.by_table() if isinstance(rows, Rows) else rows
        with self.transaction() as con:
            for table, table_rows in rows_by_table.items():
                self.insert_rows(con, table, table_rows)

    def features(self, run_id: str) -> list[dict[str, Any]]:
        """Returns the run's features ordered by layer hook and index."""
        return self.query("SELECT * FROM features WHERE run_id = ? ORDER BY hook, idx", [run_id])

    def exemplars(self, run_id: str, feature_id: str) -> list[dict[str, Any]]:
        """Returns one feature's exemplars ordered by kind and rank."""
        return self.query(
            "SELECT * FROM exemplars WHERE run_id = ? AND feature_id = ? ORDER BY kind, rank",
            [run_id, feature_id],
        )

    def explanations(self, run_id: str) -> list[dict[str, Any]]:
        """Returns the run's explanations, oldest first."""
        return self.query("SELECT * FROM explanations WHERE run_id = ? ORDER BY created_at", [run_id])

    def scores(self, run_id: str, metric: str) -> list[dict[str, Any]]:
        """Returns the run's scores of one metric."""
        return self.query("SELECT * FROM scores WHERE run_id = ? AND metric = ?", [run_id, metric])

    def experiments(self, run_id: str) -> list[dict[str, Any]]:
        """Returns the run's experiments."""
        return self.query("SELECT * FROM experiments WHERE run_id = ? ORDER BY created_at", [run_id])

    def failed_calls(self, run_id: str, role: str) -> list[dict[str, Any]]:
        """Returns the run's LLM calls of one role that ended in an error."""
        return self.query("SELECT * FROM llm_calls WHERE run_id = ? AND role = ? AND error IS NOT NULL", [run_id, role])

    def exemplars_by_feature(self, run_id: str, split: str) -> dict[str, list[dict[str, Any]]]:
        """Returns feature id -> its exemplars of one split (ordered by kind and rank), in one read."""
        rows = self.query(
            "SELECT * FROM exemplars WHERE run_id = ? AND split = ? ORDER BY feature_id, kind, rank", [run_id, split]
        )
        grouped: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            grouped.setdefault(row["feature_id"], []).append(row)
        return grouped

    def llm_spending(self, run_id: str) -> tuple[int, float]:
        """Returns the (input + output tokens, USD cost) of the run's LLM calls so far."""
        rows = self.query(
            "SELECT coalesce(sum(input_tokens + output_tokens), 0) AS tokens, coalesce(sum(cost), 0) AS cost"
            " FROM llm_calls WHERE run_id = ? AND NOT coalesce(json_extract(request, '$.cached')::BOOLEAN, false)",
            [run_id],
        )
        return int(rows[0]["tokens"]), float(rows[0]["cost"])

    def llm_costs(self, run_id: str) -> list[dict[str, Any]]:
        """Returns the run's LLM calls summed per role, backend and model: calls, errors, cached answers,
        and the tokens, cost and mean latency of the calls actually made (cached answers excluded)."""
        return self.query(
            """
            WITH c AS (
                SELECT *, coalesce(json_extract(request, '$.cached')::BOOLEAN, false) AS cached FROM llm_calls
                WHERE run_id = ?
            )
            SELECT role, backend, model, count(*) AS calls, count(error) AS errors,
                   count(*) FILTER (WHERE cached) AS cached,
                   coalesce(sum(input_tokens) FILTER (WHERE NOT cached), 0) AS input_tokens,
                   coalesce(sum(output_tokens) FILTER (WHERE NOT cached), 0) AS output_tokens,
                   coalesce(sum(cost), 0) AS cost, avg(latency_s) FILTER (WHERE NOT cached) AS mean_latency_s
            FROM c GROUP BY role, backend, model ORDER BY role, backend, model
            """,
            [run_id],
        )

    def current_explanations(self, run_id: str, metric: str) -> list[dict[str, Any]]:
        """Returns each feature's current explanation in a run (best `metric` score, then latest
        iteration) with its score and the number of rounds (explanations) behind it."""
        return self.query(
            f"SELECT * EXCLUDE (pick) FROM ({_RANKED_EXPLANATIONS}) WHERE pick = 1",
            [metric, run_id],
        )

    def features_with_review(self, run_id: str, verdict: str) -> list[str]:
        """Returns ids of the run's features with a review of `verdict` on one of their explanations."""
        rows = self.query(
            """
            SELECT DISTINCT e.feature_id FROM reviews r JOIN explanations e ON r.explanation_id = e.id
            WHERE e.run_id = ? AND r.verdict = ? ORDER BY e.feature_id
            """,
            [run_id, verdict],
        )
        return [r["feature_id"] for r in rows]

    def explanation_table(self, run_id: str, metric: str) -> list[dict[str, Any]]:
        """Returns (feature, current explanation, score, density, max, experiments, versions) rows
        of a run, best score first."""
        return self.query(
            f"""
            WITH ranked AS ({_RANKED_EXPLANATIONS})
            SELECT f.id AS feature_id, c.text AS explanation, c.score, c.versions,
                   f.density, f.max_activation,
                   (SELECT count(*) FROM experiments x JOIN explanations e2 ON x.explanation_id = e2.id
                    WHERE e2.feature_id = f.id AND e2.run_id = f.run_id) AS experiments
            FROM features f
            LEFT JOIN ranked c ON c.feature_id = f.id AND c.pick = 1
            WHERE f.run_id = ?
            ORDER BY c.score DESC NULLS LAST, f.idx
            """,
            [metric, run_id, run_id],
        )

    # review app and run monitoring --------------------------------------------------------------

    def run_progress(self) -> list[dict[str, Any]]:
        """Returns every run, newest first, with progress, cost so far and failed-call counts."""
        return self.query("""
            SELECT r.id, r.created_at, r.finished_at, r.status, r.error, r.config_hash,
                   coalesce(f.features, 0) AS features, coalesce(f.live, 0) AS live_features,
                   coalesce(f.skipped, 0) AS skipped_features, coalesce(f.few_nonfiring, 0) AS few_nonfiring,
                   coalesce(e.explained, 0) AS explained, coalesce(s.scored, 0) AS scored,
                   coalesce(x.experiments, 0) AS experiments, coalesce(c.calls, 0) AS llm_calls,
                   coalesce(c.failed, 0) AS failed_calls, coalesce(c.cost, 0) AS cost,
                   coalesce(c.input_tokens, 0) AS input_tokens, coalesce(c.output_tokens, 0) AS output_tokens
            FROM runs r
            LEFT JOIN (SELECT run_id, count(*) AS features,
                              count(*) FILTER (WHERE NOT dead AND skip_reason IS NULL) AS live,
                              count(*) FILTER (WHERE NOT dead AND skip_reason IS NOT NULL) AS skipped,
                              count(*) FILTER (WHERE NOT dead AND skip_reason IS NULL
                                               AND nonfiring_windows < nonfiring_wanted) AS few_nonfiring
                       FROM features
                       LEFT JOIN (SELECT id AS rid,
                                         coalesce(try_cast(config->>'$.collect.random_windows' AS INTEGER), 0)
                                             AS nonfiring_wanted
                                  FROM runs) w ON w.rid = features.run_id
                       GROUP BY run_id) f ON f.run_id = r.id
            LEFT JOIN (SELECT run_id, count(DISTINCT feature_id) AS explained FROM explanations GROUP BY run_id) e
                   ON e.run_id = r.id
            LEFT JOIN (SELECT run_id, count(DISTINCT explanation_id) AS scored FROM scores GROUP BY run_id) s
                   ON s.run_id = r.id
            LEFT JOIN (SELECT run_id, count(*) AS experiments FROM experiments GROUP BY run_id) x ON x.run_id = r.id
            LEFT JOIN (SELECT run_id, count(*) AS calls, count(*) FILTER (WHERE error IS NOT NULL) AS failed,
                              sum(cost) AS cost, sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens
                       FROM llm_calls GROUP BY run_id) c ON c.run_id = r.id
            ORDER BY r.created_at DESC
        """)

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
                con.register("_incoming_rows", arrow_rows)
                try:
                    columns = ", ".join(arrow_rows.column_names)
                    con.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM _incoming_rows")
                finally:
                    con.unregister("_incoming_rows")

    def rows_not_in(self, run_id: str, table: str, known_ids: Sequence[str]) -> pa.Table:
        """Returns a run's rows of `table` whose id is not among `known_ids` (what a shard added)."""
        with self.connect(read_only=True) as con:
            con.register("_known", pa.table({"id": pa.array(list(known_ids), pa.string())}))
            return con.sql(
                f"SELECT * FROM {table} WHERE run_id = ? AND id NOT IN (SELECT id FROM _known)", params=[run_id]
            ).to_arrow_table()

    def current_explainers(self, exclude_run_id: str) -> dict[str, tuple[str, str]]:
        """Returns feature id -> (explainer, prompt hash) of its latest explanation outside one run."""
        rows = self.query(
            """
            SELECT feature_id, arg_max(explainer, created_at) AS explainer,
                   arg_max(prompt_hash, created_at) AS prompt_hash
            FROM explanations WHERE run_id <> ? GROUP BY feature_id
            """,
            [exclude_run_id],
        )
        return {r["feature_id"]: (r["explainer"], r["prompt_hash"]) for r in rows}
