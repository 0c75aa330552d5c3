"""The LLM response cache's table: key -> answer text in a SQLite file of its own, shared by runs and
processes (`autointerp.llm.cache.ResponseCache` keys it and turns answers into ChatResponses)."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path


class ResponseTable:
    """A key -> (backend, answer JSON) table in SQLite; safe to share between threads and processes.
    Raises sqlite3.Error or OSError when the file cannot be opened."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False, isolation_level=None)
        self._con.execute("PRAGMA journal_mode=WAL")
        self._con.execute(
            "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, backend TEXT, response TEXT, created_at REAL)"
        )
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        """Returns the answer JSON stored for `key`, or None."""
        with self._lock:
            row = self._con.execute("SELECT response FROM responses WHERE key = ?", [key]).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, backend: str, response: str) -> None:
        """Stores the answer JSON for `key` (a later answer to the same key replaces it)."""
        with self._lock:
            self._con.execute(
                "INSERT OR REPLACE INTO responses (key, backend, response, created_at) VALUES (?, ?, ?, ?)",
                [key, backend, response, time.time()],
            )

    def count(self) -> int:
        """Returns how many answers are stored."""
        with self._lock:
            row = self._con.execute("SELECT count(*) FROM responses").fetchone()
        return int(row[0])

    def close(self) -> None:
        """Closes the file."""
        with self._lock:
            self._con.close()
