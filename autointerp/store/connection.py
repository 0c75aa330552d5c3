"""The store's file handling: short connections, retried while another process holds the lock, and
the schema check on the first one.

Connections are short (open, one transaction, close) and retried while another process holds the file
lock, so a flow and the review app can share one file. A caller that makes many calls close together (the
review app serving pages) can `hold` the file open between them and `release` it when idle. Bulk rows go in
through Arrow.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from autointerp.errors import StoreError
from autointerp.paths import output_problem
from autointerp.store import waiting
from autointerp.store.exemplar_windows import insert_exemplars
from autointerp.store.schema import SCHEMA_VERSION, apply_migrations, schema_version

LOCK_WAIT_SECONDS = 60.0


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc)
    return "lock" in text.lower() and ("Conflicting" in text or "Could not set lock" in text)


WRITE_FAILURES = ("No space left on device", "Disk quota exceeded", "File too large", "Read-only file system")
"""The operating system's reasons, as DuckDB quotes them, that a write to the store failed for want of room or
permission: turned into one StoreError line instead of a traceback."""


DUCKDB_MAGIC = b"DUCK"
"""What a DuckDB database file holds at bytes 8-11."""


def _check_magic(path: Path) -> None:
    """Raises StoreError when `path` is a non-empty file that is not a DuckDB database (DuckDB's own message
    for a `.csv` there was 'Cannot launch in-memory database in read-only mode!'). Returns None."""
    try:
        with path.open("rb") as handle:
            head = handle.read(12)
    except (FileNotFoundError, IsADirectoryError):
        return
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from None
    if head and head[8:12] != DUCKDB_MAGIC:
        raise StoreError(f"{path} is not a DuckDB database file; set store.path / --db to one autointerp wrote")


class StoreConnection:
    """A DuckDB file: each method opens, works in one transaction and closes.

    The first connection checks the file's schema version: a file written by a newer autointerp is
    refused on every command (reads included), not only on `run`.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._schema_checked = False
        self._held: duckdb.DuckDBPyConnection | None = None

    @property
    def held(self) -> bool:
        """True while `hold` keeps the file open."""
        return self._held is not None

    def hold(self) -> None:
        """Opens the file read-write and keeps it open until `release`: every `connect` in between is a new
        cursor on it, so the file is not opened again and DuckDB's cache stays warm from one call to the
        next. Other processes wait for the file meanwhile, as they do for any open connection, so a holder
        releases it soon (the review app does after a second without requests). Not thread-safe: callers
        serialise `hold`, `release` and `connect`."""
        if self._held is None:
            self._held = self._open_checked(read_only=False)

    def release(self) -> None:
        """Closes the connection `hold` opened (nothing when none is held)."""
        held, self._held = self._held, None
        if held is not None:
            held.close()

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
        if self._held is not None:  # a cursor on the held file: its own transactions, the same cache
            cursor = self._held.cursor()
            try:
                yield cursor
            except duckdb.Error as exc:
                self._raise_write_failure(exc)
                raise
            finally:
                cursor.close()
            return
        con = self._open_checked(read_only)
        try:
            yield con
        except duckdb.Error as exc:
            self._raise_write_failure(exc)
            raise
        finally:
            con.close()

    def _raise_write_failure(self, exc: duckdb.Error) -> None:
        """Raises a one-line StoreError for a write that failed for one of `WRITE_FAILURES`; returns None
        (the caller re-raises `exc`) for any other error."""
        reason = next((r for r in WRITE_FAILURES if r in str(exc)), None)
        if reason is not None:
            raise StoreError(
                f"cannot write the database {self.path}: {reason.lower()}; make room (or move store.path / --db), "
                "then rerun the same command to resume"
            ) from None

    def _open_checked(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        """Returns `_open`'s connection after the first one's schema check (a read-only open requires a
        schema); closes it and raises StoreError when the check fails."""
        con = self._open(read_only)
        if not self._schema_checked:
            try:
                self._check_schema(con, require=read_only)
            except BaseException:
                con.close()
                raise
        return con

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        """Returns a new connection to the file, waiting up to LOCK_WAIT_SECONDS while another process holds
        it; raises StoreError when the path is unusable."""
        if read_only and not self.path.exists():
            raise StoreError(f"no database at {self.path}; run `autointerp run` first or pass --db")
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a folder, not a DuckDB file; set store.path / --db to a file")
        _check_magic(self.path)
        self._make_parent()
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        delay = 0.01
        announced = False
        try:
            while True:
                try:
                    return duckdb.connect(str(self.path), read_only=read_only)
                except duckdb.IOException as exc:
                    if not _is_lock_error(exc) or time.monotonic() > deadline:
                        raise StoreError(f"cannot open {self.path}: {str(exc).splitlines()[0]}") from None
                    waiting.announce(self.path)  # a holder that sees it lets go (the review app between pages)
                    announced = True
                    time.sleep(delay)
                    delay = min(delay * 2, 0.5)
                except duckdb.ConnectionException as exc:
                    if read_only and "different configuration" in str(exc):
                        # this process holds the file read-write (a review app's `hold`): read through that handle
                        read_only = False
                        continue
                    raise StoreError(f"cannot open {self.path}: {str(exc).splitlines()[0]}") from None
                except duckdb.Error as exc:
                    raise StoreError(f"cannot open {self.path}: {str(exc).splitlines()[0]}") from None
        finally:
            if announced:
                waiting.withdraw(self.path)

    def _check_schema(self, con: duckdb.DuckDBPyConnection, require: bool) -> None:
        """Raises StoreError when the file's schema is newer than SCHEMA_VERSION, or (with `require`)
        when it has no schema at all (not an autointerp database)."""
        version = schema_version(con)
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
            problem = output_problem(self.path, folder=False)  # a part of the path is a file, or /proc
            if problem:
                raise StoreError(f"cannot create the database {self.path}: {problem}; set store.path / --db")
            return None
        with self.connect(read_only=True) as con:
            return schema_version(con)

    def check_writable(self) -> None:
        """Raises StoreError when an existing database file cannot be written: the file itself, or its folder,
        where DuckDB creates the write-ahead log (a read-only mount, a file without write permission).
        Returns None; a path with no file yet is `check_schema`'s business."""
        if not self.path.exists():
            return
        wal = self.path.with_name(self.path.name + ".wal")
        problem = output_problem(self.path, folder=False)
        if problem is None and not wal.exists():
            problem = output_problem(wal, folder=False)  # its folder must take the new file
        if problem:
            raise StoreError(f"cannot write the database {self.path}: {problem}; set store.path / --db")

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

    def migrate(self) -> int:
        """Applies pending migrations; returns the schema version now in the file."""
        with self.transaction() as con:
            return apply_migrations(con, self.path)

    @staticmethod
    def insert_rows(con: duckdb.DuckDBPyConnection, table: str, rows: Sequence[dict[str, Any]]) -> int:
        """Inserts rows (dicts with the same keys) through Arrow; returns how many."""
        if not rows:
            return 0
        return StoreConnection.insert_table(con, table, pa.Table.from_pylist(list(rows)))

    @staticmethod
    def insert_table(con: duckdb.DuckDBPyConnection, table: str, arrow_rows: pa.Table) -> int:
        """Inserts an Arrow table's rows (its columns by name); returns how many."""
        if table == "exemplars":
            return insert_exemplars(con, arrow_rows)
        columns = ", ".join(arrow_rows.column_names)
        con.register("_incoming_rows", arrow_rows)
        try:
            con.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM _incoming_rows")
        finally:
            con.unregister("_incoming_rows")
        return arrow_rows.num_rows

    def query(self, sql: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        """Returns the rows of a read query as dicts (a short read-only connection). For the store's own
        methods, the review app's query builder and tests; other code calls a named method."""
        with self.connect(read_only=True) as con:
            cursor = con.execute(sql, list(params or []))
            names = [d[0] for d in cursor.description or []]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
