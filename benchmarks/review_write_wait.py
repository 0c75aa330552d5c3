"""How long a run's writes wait while someone clicks through the review app on the same file.

The app's store access (`autointerp.review.store_access.StoreAccess`, the app's defaults: released after
1 s idle or 10 s of holding) is called every 50 ms in a thread; a separate process makes eight short
write transactions 0.3 s apart and reports how long each took to get the file. Two arms in one run: the
app as shipped (it lets go when it sees a waiter's marker), and the app blind to markers (the behaviour
before them).

    .venv/bin/python benchmarks/review_write_wait.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autointerp.review.store_access import StoreAccess  # noqa: E402
from autointerp.store import waiting  # noqa: E402
from autointerp.store.database import Store  # noqa: E402

WRITER = """
import json, sys, time
sys.path.insert(0, {root!r})
from autointerp.store.database import Store
store, waits = Store({path!r}), []
for i in range(8):
    started = time.monotonic()
    with store.transaction() as con:
        con.execute("CREATE TABLE IF NOT EXISTS probe (x INT)")
        con.execute("INSERT INTO probe VALUES (?)", [i])
    waits.append(time.monotonic() - started)
    time.sleep(0.3)
print(json.dumps(waits))
"""


@contextmanager
def clicking(access: StoreAccess, every_s: float = 0.05) -> Iterator[None]:
    """Calls the app's store access every `every_s` seconds in a thread (a page read: someone clicking
    without pause) until the block ends, then lets go of the file."""
    stop = threading.Event()

    def click() -> None:
        while not stop.is_set():
            access(lambda: access.store.query("SELECT count(*) AS n FROM features"))
            time.sleep(every_s)

    clicker = threading.Thread(target=click)
    clicker.start()
    try:
        yield
    finally:
        stop.set()
        clicker.join()
        access.release()


def writer_waits(path: Path) -> list[float]:
    """Returns the seconds each of the writer process's transactions took while the app is clicked."""
    store = Store(path)
    store.migrate()
    with clicking(StoreAccess(store)):
        time.sleep(0.5)
        code = textwrap.dedent(WRITER.format(root=str(ROOT), path=str(path)))
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True)
    return [float(w) for w in json.loads(result.stdout.strip().splitlines()[-1])]


def main() -> None:
    """Prints both arms' waits as a table."""
    with tempfile.TemporaryDirectory() as folder:
        shipped = writer_waits(Path(folder) / "shipped.duckdb")
        with mock.patch.object(waiting, "others_waiting", return_value=False):
            blind = writer_waits(Path(folder) / "blind.duckdb")
    print("| app | each write's wait (s) | longest | total |")
    print("|---|---|---:|---:|")
    for name, waits in (("blind to markers (before)", blind), ("lets go for a waiter (shipped)", shipped)):
        each = " ".join(f"{w:.2f}" for w in waits)
        print(f"| {name} | {each} | {max(waits):.2f} | {sum(waits):.2f} |")


if __name__ == "__main__":
    main()
