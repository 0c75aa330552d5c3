"""One long-lived thread pool per width for the calls a feature fans out (a scorer's windows, a backend's
per-item requests), instead of a pool created and torn down per feature: at 64 features in flight that
churn of threads cost more client CPU than the calls' own work (results/benchmarks/campaign.md).

The calls in flight stay bounded by the backend's limiter, as before; the pool only saves starting
threads. A call made from one of the pool's own threads runs inline, so nested fan-outs never wait on
a pool their caller holds.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TypeVar

A = TypeVar("A")
B = TypeVar("B")

THREAD_PREFIX = "fanout"
_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()
_inside = threading.local()


def shared_pool(width: int) -> ThreadPoolExecutor:
    """Returns this process's pool of `width` threads (created on first use, kept for the process)."""
    with _pools_lock:
        pool = _pools.get(width)
        if pool is None:
            pool = _pools[width] = ThreadPoolExecutor(
                width, thread_name_prefix=f"{THREAD_PREFIX}-{width}", initializer=_mark_inside
            )
        return pool


def _mark_inside() -> None:
    _inside.active = True


def fan_out(work: Callable[[A], B], items: Sequence[A], width: int) -> list[B]:
    """Returns `work(item)` for every item, in order, up to `width` at once on the shared pool of that
    width; inline when `width` or the items are 1, or when called from a shared pool's thread. The
    first exception of an item is raised, after every item has finished."""
    if width <= 1 or len(items) <= 1 or getattr(_inside, "active", False):
        return [work(item) for item in items]
    futures = [shared_pool(width).submit(work, item) for item in items]
    wait(futures)
    return [future.result() for future in futures]
