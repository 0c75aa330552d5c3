"""One process per run: a second `autointerp run` of a run that is running is refused at once (two of them
had written every score row twice), while other runs of the same store go on."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autointerp.cli.app import app
from autointerp.config import load_config
from autointerp.store.run_lock import RunBusyError, holds_run, run_lock


@contextmanager
def held_elsewhere(store: Path, run_id: str) -> Iterator[None]:
    """Holds `run_id`'s lock in another process until the block ends."""
    code = textwrap.dedent(
        f"""
        import sys
        from autointerp.store.run_lock import run_lock
        with run_lock({str(store)!r}, {run_id!r}):
            print("held", flush=True)
            sys.stdin.readline()
        """
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=60)


def test_a_run_held_by_another_process_is_refused_and_other_runs_are_not(tmp_path: Path) -> None:
    store = tmp_path / "runs.duckdb"
    with held_elsewhere(store, "run-a"):
        busy = r"^run run-a is already running in another process on this store"
        with pytest.raises(RunBusyError, match=busy), run_lock(store, "run-a"):
            pass
        with run_lock(store, "run-b"):  # another run of the same store
            pass
    with run_lock(store, "run-a"):  # the holder is gone: its lock went with it
        pass


def test_the_first_run_into_a_new_folder_is_locked_too(tmp_path: Path) -> None:
    """The lock file goes beside the store, whose folder the store makes later: the lock makes it first."""
    store = tmp_path / "new" / "runs.duckdb"
    with held_elsewhere(store, "run-a"), pytest.raises(RunBusyError), run_lock(store, "run-a"):
        pass


def test_autointerp_run_refuses_a_run_that_is_running(tmp_path: Path) -> None:
    store = tmp_path / "runs.duckdb"
    run_id = load_config(None, [f"store.path='{store}'"]).resolved_run_id()  # the run the command resumes
    with held_elsewhere(store, run_id):
        ran = CliRunner().invoke(app, ["run", "-s", f"store.path='{store}'"])
    assert ran.exit_code == 1, ran.output
    assert ran.output.splitlines() == [
        f"error: run {run_id} is already running in another process on this store; wait for it to finish,"
        " or stop it (a rerun then resumes it)"
    ], ran.output


def test_a_stop_marks_a_run_interrupted_only_in_the_process_that_runs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second `autointerp run` of a running run, stopped before it was refused, marked the first process's
    run `interrupted` while it went on running."""
    import signal

    from autointerp.cli import app as cli
    from autointerp.store.database import Store

    path = tmp_path / "runs.duckdb"
    store = Store(path)
    store.migrate()
    store.start_run("run-a", {}, "h", "0", None)
    monkeypatch.setattr(cli, "_run_in_progress", (path, "run-a"))
    with held_elsewhere(path, "run-a"):
        assert not holds_run(path, "run-a")
        cli._record_interruption(signal.SIGTERM)  # this process never got the run's lock
        assert store.runs()[0]["status"] == "running"
    with run_lock(path, "run-a"):
        assert holds_run(path, "run-a")
        cli._record_interruption(signal.SIGTERM)
    assert store.runs()[0]["status"] == "interrupted" and not holds_run(path, "run-a")
