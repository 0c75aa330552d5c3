"""Client CPU per request of the lean HTTP path against the campaign benchmark's server (no latency):
`httpx` (HTTPS and proxied servers) against keep-alive `http.client` connections (plain HTTP).

    PYTHONPATH=. .venv/bin/python benchmarks/campaign_http.py [requests]
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autointerp.llm.lean_http import LeanHTTP, _PlainConnections  # noqa: E402
from benchmarks.campaign_server import ServerProcess  # noqa: E402

BODY = {
    "model": "campaign",
    "messages": [
        {"role": "system", "content": "You explain"},
        {"role": "user", "content": "The word zqabcd fires on the word zqabcd " * 40},
    ],
    "max_tokens": 40,
    "temperature": 0.0,
}


def bench(label: str, post: Callable[[], object], requests: int, threads: int) -> None:
    """Prints CPU and wall ms per request of `requests` posts spread over `threads` threads."""
    for _ in range(20):
        post()

    def run(n: int) -> None:
        for _ in range(n):
            post()

    cpu, wall = time.process_time(), time.perf_counter()
    workers = [threading.Thread(target=run, args=(requests // threads,)) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    print(
        f"{label}, {threads} threads: {1000 * (time.process_time() - cpu) / requests:.3f} ms CPU/request, "
        f"{1000 * (time.perf_counter() - wall) / requests:.2f} ms wall/request"
    )


def main() -> None:
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    server = ServerProcess(0.0, 0.0)
    try:
        url = server.url + "/v1"
        lean = LeanHTTP(url, "key", 30)
        plain = lean._plain
        lean._plain = None  # the httpx path, as an HTTPS or proxied server gets it
        import httpx

        lean._client = httpx.Client(timeout=30, headers={"Authorization": "Bearer key"})
        for threads in (1, 16):
            bench("httpx", lambda: json.loads(lean.post("/chat/completions", BODY, 30)), requests, threads)
        lean._plain = plain
        for threads in (1, 16):
            bench("http.client", lambda: json.loads(lean.post("/chat/completions", BODY, 30)), requests, threads)
        assert isinstance(plain, _PlainConnections)
    finally:
        server.close()


if __name__ == "__main__":
    main()
