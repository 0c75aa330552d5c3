"""The review app at 10k, 100k and 1M features: each list page and the feature page over HTTP, side by side.

For each size it builds the scale fixture (`benchmarks/scale_fixture.py`) unless the file exists, drops the
list's index, opens the review app on it (which builds the index before serving, as `autointerp review` does;
uvicorn on loopback) and times, over real HTTP, the first list page, every sort in both directions, every
filter, searches, deep pages by number and by keyset link, and the feature page: the median of `--repeats`
requests each, wall and CPU of this process (server and client). Prints a Markdown table with the store's
bytes per feature and the machine's load average.

    .venv/bin/python benchmarks/scale.py --sizes 10000 100000 1000000 --dir /tmp/scale
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autointerp.review import ReviewSettings, create_app  # noqa: E402
from autointerp.review.feature_list import FEATURE_SORTS  # noqa: E402
from autointerp.store.database import Store  # noqa: E402
from benchmarks.scale_fixture import build  # noqa: E402

PER_PAGE = 50


def pages(total: int, middle_feature: str) -> list[tuple[str, str, dict[str, str]]]:
    """Returns (name, path, query) of every page timed, for a list of `total` features."""
    out: list[tuple[str, str, dict[str, str]]] = []
    middle = str(max(1, total // PER_PAGE // 4))  # about the middle of a filter keeping half the list
    for sort, spec in FEATURE_SORTS.items():
        first = "desc" if spec.descending_first else "asc"
        second = "asc" if first == "desc" else "desc"
        out += [(f"sort {sort} {first}", "/", {"sort": sort, "dir": first})]
        out += [(f"sort {sort} {second}", "/", {"sort": sort, "dir": second})]
    out += [
        ("filter status=accepted", "/", {"status": "accepted"}),
        ("filter status=unreviewed", "/", {"status": "unreviewed"}),
        ("filter chance=only", "/", {"chance": "only"}),
        ("filter chance=hide", "/", {"chance": "hide"}),
        ("filter score >= 0.5", "/", {"min": "0.5"}),
        ("filter disagreement >= 0.5", "/", {"disagree": "0.5"}),
        ("filter has a note", "/", {"noted": "1"}),
        ("filter layer res.0", "/", {"hook": "res.0"}),
        ("search one word", "/", {"q": "comma"}),
        ("search two words", "/", {"q": "python loop"}),
        ("search word prefix", "/", {"q": "punct"}),
        ("search + chance=hide + density", "/", {"q": "plural", "chance": "hide", "sort": "density"}),
        ("deep page (middle), score", "/", {"page": str(max(1, total // PER_PAGE // 2))}),
        ("last page, score", "/", {"page": str(max(1, -(-total // PER_PAGE)))}),
        ("deep page by its next link (keyset), score", "/", {"page": "2", "after": str(total // 2)}),
        ("deep page by its previous link (keyset), density", "/", {"sort": "density", "before": str(total // 2)}),
        ("deep page (middle), density asc", "/", {"sort": "density", "page": str(max(1, total // PER_PAGE // 2))}),
        ("deep page (middle), chance=only, density", "/", {"sort": "density", "chance": "only", "page": middle}),
        ("deep page (middle), status", "/", {"sort": "status", "page": str(max(1, total // PER_PAGE // 2))}),
        ("search one word, page 20", "/", {"q": "comma", "page": "20"}),
        ("feature page", "/feature", {"id": middle_feature}),
        ("feature page, list filtered", "/feature", {"id": middle_feature, "chance": "hide", "sort": "density"}),
    ]
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def served(db: Path, hold_seconds: float = 1.0) -> Iterator[tuple[str, float]]:
    """Serves the review app over `db`; yields its base URL and how long opening the app took."""
    began = time.perf_counter()
    app = create_app(ReviewSettings(db=db, hold_seconds=hold_seconds))
    opened = time.perf_counter() - began
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=_free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.config.port}", opened
    finally:
        server.should_exit = True
        thread.join()


def measure(
    db: Path, repeats: int, only: list[str] | None = None, keep_index: bool = False, hold_seconds: float = 1.0
) -> dict[str, tuple[float, float]]:
    """Returns page name -> median (wall, CPU) seconds over `repeats` requests, and opening the app (which builds
    the list's index from nothing unless `keep_index`), with the app holding the file open `hold_seconds` after
    each request (0: every page on a fresh connection, a cold cache). CPU is this process's (server and client
    threads): on a shared machine, the work a page costs. Each page's row is also printed to stderr as it is
    measured."""
    store = Store(db)
    total = int(store.query("SELECT count(*) AS n FROM features")[0]["n"])
    middle = store.query("SELECT id FROM features ORDER BY idx, id LIMIT 1 OFFSET ?", [total // 2])[0]["id"]
    with store.transaction() as con:  # opening the app below builds the list's index from nothing
        for table in ("feature_list_index", "feature_list_words", "feature_list_stamp", "feature_list_order"):
            if not keep_index:
                con.execute(f"DROP TABLE IF EXISTS {table}")
    times: dict[str, tuple[float, float]] = {}
    c0 = time.process_time()
    with served(db, hold_seconds) as (base, opened), httpx.Client(base_url=base, timeout=600) as client:
        opening = "open the app (index current)" if keep_index else "open the app (builds the list's index)"
        times[opening] = (opened, time.process_time() - c0)
        t0, c0 = time.perf_counter(), time.process_time()
        client.get("/").raise_for_status()
        times["first page"] = (time.perf_counter() - t0, time.process_time() - c0)
        for name, path, params in pages(total, middle):
            if only and not any(word in name for word in only):
                continue
            walls, cpus = [], []
            for _ in range(repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                response = client.get(path, params=params)
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
                if response.status_code != 200:
                    walls, cpus = [math.nan], [math.nan]
                    print(f"{name}: HTTP {response.status_code}", file=sys.stderr)
                    break
            times[name] = (statistics.median(walls), statistics.median(cpus))
            print(
                f"| {name} | {times[name][0] * 1000:,.0f} ({times[name][1] * 1000:,.0f}) |", file=sys.stderr, flush=True
            )
    return times


def main() -> None:
    """Builds missing fixtures, times the pages at each size and prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/scale"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=None, help="time only the pages whose name holds one of these")
    parser.add_argument("--keep-index", action="store_true", help="time the pages over the list index as it is")
    parser.add_argument(
        "--hold-seconds",
        type=float,
        default=1.0,
        help="how long the app holds the file open after a request (its default 1; 0: a fresh connection per page)",
    )
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    results: dict[int, dict[str, tuple[float, float]]] = {}
    sizes: dict[int, int] = {}
    for n in args.sizes:
        db = args.dir / f"{n}.duckdb"
        if not db.exists():
            build(db, n)
        results[n] = measure(db, args.repeats, args.only, args.keep_index, args.hold_seconds)
        sizes[n] = db.stat().st_size
        print(f"{n:,} features measured", file=sys.stderr, flush=True)
    load = os.getloadavg()
    header = " | ".join(f"{n:,} features" for n in args.sizes)
    print(
        f"load average at the end: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min), "
        f"{os.cpu_count()} CPUs; the app held the file {args.hold_seconds:g} s after each request\n"
    )
    print(f"| page: wall ms (CPU ms), median of {args.repeats} | {header} |")
    print("|---|" + "---:|" * len(args.sizes))
    print(
        "| file bytes / feature, list index included | " + " | ".join(f"{sizes[n] / n:,.0f}" for n in args.sizes) + " |"
    )
    for name in results[args.sizes[0]]:
        cells = [f"{results[n][name][0] * 1000:,.0f} ({results[n][name][1] * 1000:,.0f})" for n in args.sizes]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
