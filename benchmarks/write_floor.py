"""Where an exemplar write's CPU goes, and DuckDB's own floor for rows that carry a window's activations.

Builds three 20,000-feature chunks of the scale fixture (400,000 exemplar rows each), writes them through
`Store.load_tables` as the fixture does, then splits a fourth chunk's write into its statements (keys;
window insert; row insert with and without the key and the feature-id index) and times bare DuckDB inserts of
the activations list alone, with a checkpoint, in a scratch file. CPU seconds of this process (every
thread) and wall seconds.

    .venv/bin/python benchmarks/write_floor.py --db /tmp/write_floor.duckdb
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autointerp.store.database import Store  # noqa: E402
from autointerp.store.exemplar_windows import KEY_SQL, rows_insert_sql, windows_insert_sql  # noqa: E402
from benchmarks import scale_fixture as fixture  # noqa: E402


def cpu(label: str, rows: int, work: Callable[[], object]) -> None:
    """Runs `work` and prints its CPU seconds, rows per CPU-second, wall seconds and rows per second."""
    c0, w0 = time.process_time(), time.perf_counter()
    work()
    spent, wall = time.process_time() - c0, time.perf_counter() - w0
    print(f"| {label} | {spent:.2f} | {rows / spent:,.0f} | {wall:.2f} | {rows / wall:,.0f} |", flush=True)


def main() -> None:
    """Prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path("/tmp/write_floor.duckdb"))
    args = parser.parse_args()
    for path in (args.db, args.db.with_suffix(".floor.duckdb")):
        path.unlink(missing_ok=True)
    rng = np.random.default_rng(0)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    corpus, vocabulary = fixture._corpus(rng, 16_384), fixture._vocabulary()
    order = fixture._feature_order(80_000)
    chunks = [
        fixture._chunk_tables(rng, first, order[first : first + 20_000], corpus, vocabulary, start)["exemplars"]
        for first in range(0, 80_000, 20_000)
    ]
    n = chunks[0].num_rows
    store = Store(args.db)
    store.migrate()
    print("| write of 400,000 exemplar rows | CPU s | rows / CPU-s | wall s | rows / s |\n|---|---:|---:|---:|---:|")
    for i, chunk in enumerate(chunks[:3]):
        cpu(
            f"`Store.load_tables`, chunk {i + 1} (store holds {i * n:,} rows)",
            n,
            functools.partial(store.load_tables, {"exemplars": chunk}),
        )
    con = duckdb.connect(str(args.db))
    con.register("incoming", chunks[3])
    con.begin()

    def keys() -> None:
        hashed = con.sql(f"SELECT {KEY_SQL} FROM incoming").to_arrow_table().column(0)
        con.register("keyed", chunks[3].append_column("window_key", hashed))

    cpu("  window keys, hashed once (ids and strings, in row order)", n, keys)
    cpu("  window insert (anti-join, group)", n, lambda: con.execute(windows_insert_sql("keyed")))
    cpu("  row insert, indexed", n, lambda: con.execute(rows_insert_sql("keyed")))
    con.rollback()
    keys()  # the rollback took the registration with it
    con.execute("CREATE TEMP TABLE plain AS SELECT * FROM exemplar_rows LIMIT 0")
    cpu("  row insert, no index", n, lambda: con.execute(rows_insert_sql("keyed", "plain")))
    cpu("  row insert, no index, no key", n, lambda: con.execute(rows_insert_sql("incoming", "plain", key="0")))
    con.close()
    floor = duckdb.connect(str(args.db.with_suffix(".floor.duckdb")))
    floor.register("incoming", chunks[3].select(["activations"]))
    floor.execute("CREATE TABLE a (activations FLOAT[])")
    cpu(
        "DuckDB floor: the activations list alone, then a checkpoint",
        n,
        lambda: floor.execute("INSERT INTO a SELECT * FROM incoming; CHECKPOINT"),
    )
    floor.execute("CREATE TABLE f (feature_id VARCHAR)")
    floor.register("ids", chunks[3].select(["feature_id"]))
    cpu(
        "DuckDB floor: the feature id alone, then a checkpoint",
        n,
        lambda: floor.execute("INSERT INTO f SELECT * FROM ids; CHECKPOINT"),
    )


if __name__ == "__main__":
    main()
