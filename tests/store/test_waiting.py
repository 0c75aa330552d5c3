"""Markers that say a process waits for a store file's lock (`autointerp.store.waiting`)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from autointerp.store import waiting


def test_another_process_fresh_marker_is_seen_and_this_process_own_is_not(tmp_path: Path) -> None:
    db = tmp_path / "runs.duckdb"
    assert not waiting.others_waiting(db)
    waiting.announce(db)
    assert waiting.marker(db).exists()
    assert not waiting.others_waiting(db)  # its own marker does not make a holder let go
    waiting.marker(db, pid=os.getpid() + 1).touch()
    assert waiting.others_waiting(db)
    waiting.withdraw(db)
    assert not waiting.marker(db).exists()
    waiting.withdraw(db)  # twice is fine


def test_a_marker_left_by_a_dead_waiter_is_ignored_then_removed(tmp_path: Path) -> None:
    db = tmp_path / "runs.duckdb"
    quiet, dead = waiting.marker(db, pid=11), waiting.marker(db, pid=12)
    quiet.touch()
    dead.touch()
    now = time.time()
    os.utime(quiet, (now - waiting.FRESH_SECONDS - 1, now - waiting.FRESH_SECONDS - 1))
    os.utime(dead, (now - waiting.STALE_SECONDS - 1, now - waiting.STALE_SECONDS - 1))
    assert not waiting.others_waiting(db)
    assert quiet.exists() and not dead.exists()


def test_a_folder_that_cannot_be_written_is_left_alone(tmp_path: Path) -> None:
    db = tmp_path / "missing-folder" / "runs.duckdb"
    waiting.announce(db)  # no error: holders then release on their own schedule
    assert not waiting.others_waiting(db)
