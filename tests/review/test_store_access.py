"""The review app holds its database open while pages come in and lets go when idle, so a run in another
process can write the same file."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from autointerp.errors import StoreError
from autointerp.review import ReviewSettings, create_app
from autointerp.review.store_access import StoreAccess
from autointerp.store.database import Store
from benchmarks.review_write_wait import clicking

Serve = Callable[[ReviewSettings], str]


def _other_process_can_write(path: Path) -> bool:
    """Returns whether a separate process opens `path` read-write at once (no waiting for the lock)."""
    code = textwrap.dedent(
        f"""
        import duckdb, sys
        try:
            duckdb.connect({str(path)!r}).execute("CREATE TABLE IF NOT EXISTS probe (x INT)").close()
        except duckdb.IOException as exc:
            sys.exit(3 if "lock" in str(exc).lower() else 1)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode in (0, 3), result.stderr
    return result.returncode == 0


def _wait(condition: Any, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_calls_close_together_share_one_open_file_and_release_it_when_idle(review_db: tuple[Path, Any]) -> None:
    path, _ = review_db
    store = Store(path)
    access = StoreAccess(store, idle_seconds=0.5)
    assert access(lambda: store.query("SELECT count(*) AS n FROM features"))[0]["n"] == 6
    assert store.held
    assert not _other_process_can_write(path)  # held: another process waits
    # a read in this process while the app holds the file read-write goes through the same handle
    assert Store(path).query("SELECT count(*) AS n FROM explanations")[0]["n"] >= 6
    assert _wait(lambda: not store.held)
    assert _other_process_can_write(path)
    access(lambda: store.query("SELECT 1 AS one"))
    assert store.held
    access.release()
    assert not store.held


def test_a_hold_ends_after_its_longest_time_even_while_calls_keep_coming(review_db: tuple[Path, Any]) -> None:
    path, _ = review_db
    store = Store(path)
    access = StoreAccess(store, idle_seconds=0.4, max_hold_seconds=0.6)
    held_by_call = []
    start = time.monotonic()
    while time.monotonic() - start < 1.6:  # a call every 50 ms: never idle
        access(lambda: store.query("SELECT 1 AS one"))
        held_by_call.append(store.held)
        time.sleep(0.05)
    access.release()
    released_at = held_by_call.index(False)  # after 0.6 s of holding, short connections for 0.4 s
    assert 0 < released_at < len(held_by_call) - 1
    assert True in held_by_call[released_at:]  # and then it holds again


def test_the_app_serves_pages_from_a_held_file_and_lets_a_run_write_between_them(
    review_db: tuple[Path, Any], serve: Serve
) -> None:
    path, fixture = review_db
    base = serve(ReviewSettings(db=path, hold_seconds=0.5))
    with httpx.Client(base_url=base) as client:
        first = client.get("/")
        feature = client.get("/feature", params={"id": fixture["features"][0]})
    assert first.status_code == 200 and feature.status_code == 200
    assert fixture["features"][0] in feature.text
    # the app lets go within its hold: a run in another process writes, and the app serves on afterwards
    assert _wait(lambda: _other_process_can_write(path), seconds=15)
    with httpx.Client(base_url=base) as client:
        assert client.get("/").status_code == 200


def test_holding_can_be_turned_off(review_db: tuple[Path, Any]) -> None:
    path, _ = review_db
    app = create_app(ReviewSettings(db=path, hold_seconds=0))
    access = app.state.store_access
    access(lambda: access.store.query("SELECT 1 AS one"))
    assert not access.store.held
    assert _other_process_can_write(path)


def test_a_file_that_cannot_be_held_is_read_on_short_connections(
    review_db: tuple[Path, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = review_db
    store = Store(path)

    def refuse() -> None:
        raise StoreError(f"cannot open {path}: read-only file system")

    monkeypatch.setattr(store, "hold", refuse)
    access = StoreAccess(store, idle_seconds=0.5)
    assert access(lambda: store.query("SELECT count(*) AS n FROM features"))[0]["n"] == 6
    assert not store.held and _other_process_can_write(path)


def test_a_run_waiting_for_the_file_gets_it_after_a_page_not_after_the_hold(review_db: tuple[Path, Any]) -> None:
    path, _ = review_db
    store = Store(path)
    access = StoreAccess(store, idle_seconds=0.5, max_hold_seconds=120.0)  # longer than a writer waits (60 s)
    with clicking(access):  # someone clicking without pause: the hold never ends on its own
        assert _wait(lambda: store.held)
        code = textwrap.dedent(
            f"""
            import time
            from autointerp.store.database import Store
            started = time.monotonic()
            with Store({str(path)!r}).transaction() as con:
                con.execute("CREATE TABLE IF NOT EXISTS probe (x INT)")
            print(time.monotonic() - started)
            """
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout.split()[-1]) < 10.0  # a page and a check of the marker, not the 120 s hold
    assert not list(path.parent.glob(f"{path.name}.waiting.*"))  # the writer withdrew its marker
