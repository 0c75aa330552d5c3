"""Waiting for a store file's lock, made visible to the process that holds it.

DuckDB lets one process open a file for writing at a time, and a waiter cannot tell the holder it is
there. A process waiting for the lock touches a marker beside the file, `<file>.waiting.<pid>`, on every
retry and removes it once it has the file; a process that holds the file for convenience (the review app
between pages) looks for another process's fresh marker and lets go, so a run writing the same file
waits for one page rather than for the whole hold. A marker not touched for `FRESH_SECONDS` is left by a
process that died waiting and is ignored (and removed once it is a minute old).
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

FRESH_SECONDS = 2.0
"""A marker touched this recently belongs to a live waiter (waiters retry at least every 0.5 s)."""
STALE_SECONDS = 60.0


def marker(path: Path, pid: int | None = None) -> Path:
    """Returns the marker that process `pid` (default: this one) keeps while it waits for `path`."""
    return path.with_name(f"{path.name}.waiting.{os.getpid() if pid is None else pid}")


def announce(path: Path) -> None:
    """Creates or touches this process's marker for `path`; a folder it cannot write is left alone
    (holders then release on their own schedule, as before markers existed)."""
    with contextlib.suppress(OSError):
        marker(path).touch()


def withdraw(path: Path) -> None:
    """Removes this process's marker for `path`, if there is one."""
    marker(path).unlink(missing_ok=True)


def others_waiting(path: Path) -> bool:
    """Returns True when another process touched its marker for `path` in the last FRESH_SECONDS."""
    now, own = time.time(), marker(path).name
    try:
        candidates = list(path.parent.glob(f"{path.name}.waiting.*"))
    except OSError:
        return False
    waiting = False
    for candidate in candidates:
        if candidate.name == own:
            continue
        try:
            age = now - candidate.stat().st_mtime
        except OSError:  # withdrawn meanwhile
            continue
        if age <= FRESH_SECONDS:
            waiting = True
        elif age > STALE_SECONDS:
            candidate.unlink(missing_ok=True)
    return waiting
