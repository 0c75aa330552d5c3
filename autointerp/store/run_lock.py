"""One process per run at a time.

Two `autointerp run`s of one config on one store resume the same run id, and each did the whole run: the
features and explanations came out once (their writes skip what is there), but every score row and every
scorer's call record twice. While a run's flow runs, its process holds a lock on a byte of
`<store>.runs.lock` picked by the run id (`fcntl.lockf`); a second process asking for the same run is refused
at once, and the lock goes with the process however it ends, so a crashed run leaves nothing to clean up.
Runs with other ids lock other bytes and go on side by side. Where `fcntl` does not exist (Windows), or the
lock file cannot be made, runs are not locked, as before.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from autointerp.errors import StoreError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

LOCK_BYTES = 1 << 40
"""Range the run id's byte is drawn from: two run ids share one with negligible odds."""


_held: set[tuple[Path, str]] = set()
"""(lock file, run id) of the runs this process runs now (under their lock, or unlocked where none can be had)."""


def holds_run(store_path: Path, run_id: str) -> bool:
    """Returns whether this process is running run `run_id` of the store at `store_path` (inside `run_lock`):
    one that was refused, or has not got so far, must not mark the other process's run as stopped."""
    return (lock_file(Path(store_path)), run_id) in _held


@contextmanager
def _holding(store_path: Path, run_id: str) -> Iterator[None]:
    key = (lock_file(Path(store_path)), run_id)
    _held.add(key)
    try:
        yield
    finally:
        _held.discard(key)


class RunBusyError(StoreError):
    """Another process is running this run now."""


def lock_file(store_path: Path) -> Path:
    """Returns the file whose bytes lock the runs of the store at `store_path`."""
    return store_path.with_name(f"{store_path.name}.runs.lock")


def _offset(run_id: str) -> int:
    return int.from_bytes(hashlib.sha256(run_id.encode()).digest()[:8], "big") % LOCK_BYTES


@contextmanager
def run_lock(store_path: Path, run_id: str) -> Iterator[None]:
    """Holds run `run_id`'s lock while the block runs; raises RunBusyError at once when another process holds it."""
    if fcntl is None:
        with _holding(store_path, run_id):
            yield
        return
    path = lock_file(Path(store_path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # a new store's folder, made here before the store makes it
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # a folder this process cannot write: the store's own open says so
        with _holding(store_path, run_id):
            yield
        return
    try:
        try:
            fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _offset(run_id))
        except OSError:
            raise RunBusyError(
                f"run {run_id} is already running in another process on this store; wait for it to finish,"
                " or stop it (a rerun then resumes it)"
            ) from None
        with _holding(store_path, run_id):
            yield
    finally:
        os.close(descriptor)  # closing releases the lock
