"""A run that cannot write says so in one line: a full disk under the store or a collection checkpoint (here
a file-size limit, which fails the same write with "File too large"), and an existing store file that cannot
be written, found before a run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autointerp.cli.app import app
from autointerp.errors import StoreError
from autointerp.store.database import Store

FILL = """
import resource, signal, sys
from autointerp.errors import StoreError
from autointerp.store.database import Store
store = Store(sys.argv[1])
store.migrate()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing the process
resource.setrlimit(resource.RLIMIT_FSIZE, (2_000_000, 2_000_000))
try:
    with store.transaction() as con:
        con.execute("CREATE TABLE filler AS SELECT range AS i, md5(range::VARCHAR) AS h FROM range(1000000)")
except StoreError as exc:
    print(exc)
"""


def test_a_write_that_runs_out_of_room_is_one_line(tmp_path: Path) -> None:
    """A run on a full disk ended in three tracebacks (DuckDB's TransactionException through Prefect)."""
    path = tmp_path / "runs.duckdb"
    done = subprocess.run([sys.executable, "-c", FILL, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        f"cannot write the database {path}: file too large; make room (or move store.path / --db), then rerun "
        "the same command to resume\n"
    )
    assert Store(path).check_schema() is not None  # the file is still a usable store


def test_check_refuses_an_existing_store_it_cannot_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`autointerp check` said ok for a store on a read-only mount; `run` failed after starting Prefect."""
    path = tmp_path / "runs.duckdb"
    Store(path).migrate()
    Store(path).check_writable()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == path else real_access(p, mode))
    with pytest.raises(StoreError, match=rf"^cannot write the database {path}: {path} is not writable; set store"):
        Store(path).check_writable()
    result = CliRunner().invoke(app, ["check", "-s", f"store.path='{path}'"])
    assert result.exit_code == 1 and result.output.startswith(f"error: cannot write the database {path}: ")


CHECKPOINT = """
import resource, signal, sys
from pathlib import Path
import torch
from autointerp.collect.results import CheckpointError, SamplingPlan
from autointerp.collect.sampler import ExemplarSampler
from autointerp.collect.stream import save_checkpoint
sampler = ExemplarSampler(200, 8, SamplingPlan(top_k=4, random_windows=2), torch.device("cpu"))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))
try:
    save_checkpoint(Path(sys.argv[1]), "run:hash", sampler)
except CheckpointError as exc:
    print(exc)
"""


def test_a_collection_checkpoint_that_does_not_fit_is_one_line(tmp_path: Path) -> None:
    """`torch.save` of a checkpoint on a full disk ended a run in a traceback and left a partial file."""
    path = tmp_path / "checkpoints" / "run.collect.pt"
    done = subprocess.run([sys.executable, "-c", CHECKPOINT, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"cannot write the collection checkpoint {path}: ")
    assert done.stdout.endswith(
        "; make room (or set collect.checkpoint_every = 0), then rerun the same command to resume\n"
    )
    assert list(path.parent.iterdir()) == []  # no partial staging file
