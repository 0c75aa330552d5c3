"""The review app's access to its store: one call at a time, with the file held open while pages come in.

Opening a DuckDB file starts with an empty cache, so a page on a fresh connection reads its rows from disk
(at a million features, about 90 ms of a page's 50-row read, against 9 ms warm). `StoreAccess` keeps the
file open from one request to the next and closes it after `idle_seconds` without a request, or after
`max_hold_seconds` of holding followed by `idle_seconds` on short connections, so that a run writing the
same file (which waits for the lock) gets its turn even while someone keeps clicking. A process waiting for
the lock says so with a marker beside the file (`autointerp.store.waiting`): the app then lets go after the
page it is serving and rests `idle_seconds`, so a run's write waits for a page, not for the hold. A file the
app cannot open for writing (read-only on disk) is read on short read-only connections, as before holding
existed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

from autointerp.errors import StoreError
from autointerp.store import waiting
from autointerp.store.database import Store

T = TypeVar("T")


class StoreAccess:
    """Runs the app's store calls one at a time, holding the file open between calls close together."""

    def __init__(self, store: Store, idle_seconds: float = 1.0, max_hold_seconds: float = 10.0) -> None:
        self.store = store
        self.idle_seconds = idle_seconds
        self.max_hold_seconds = max_hold_seconds
        self._lock = threading.Lock()
        self._last_call = 0.0
        self._held_since = 0.0
        self._rest_until = 0.0  # after a long hold, short connections until then
        self._watcher: threading.Thread | None = None
        self._can_hold = True
        self.watch_seconds = 0.1
        """How often the held file is checked for being idle, held too long, or wanted by another process."""

    def __call__(self, fn: Callable[[], T]) -> T:
        """Returns `fn()`, run with the store to itself (held open unless holding is off or resting)."""
        with self._lock:
            now = time.monotonic()
            if self.idle_seconds > 0 and not self.store.held and now >= self._rest_until and self._can_hold:
                try:
                    self.store.hold()
                except StoreError:  # e.g. a file this user may read but not write: short read-only connections
                    self._can_hold = False
                else:
                    self._held_since = now
                    self._watch()
            try:
                return fn()
            finally:
                self._last_call = time.monotonic()

    def release(self) -> None:
        """Closes the held file now (the app's shutdown; tests that open the file themselves)."""
        with self._lock:
            self.store.release()

    def _watch(self) -> None:
        """Starts the thread that releases the held file once it is idle or has been held too long."""
        if self._watcher is None or not self._watcher.is_alive():
            self._watcher = threading.Thread(target=self._release_when_due, name="review-store-release", daemon=True)
            self._watcher.start()

    def _release_when_due(self) -> None:
        while True:
            time.sleep(min(self.watch_seconds, self.idle_seconds))
            with self._lock:
                if not self.store.held:
                    return
                now = time.monotonic()
                if now - self._held_since >= self.max_hold_seconds or waiting.others_waiting(self.store.path):
                    self.store.release()
                    self._rest_until = now + self.idle_seconds
                    return
                if now - self._last_call >= self.idle_seconds:
                    self.store.release()
                    return
