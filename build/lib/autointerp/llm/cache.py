"""The response cache: answers to identical requests, kept in a SQLite file shared by runs and processes.

A request is identical when the backend (with its server, for backends that have one), the model,
the messages and every generation parameter (prefill, max_tokens, temperature) are. The file
lives outside the run database (`$AUTOINTERP_CACHE/llm-cache/responses.sqlite` by default), so
a new run, or another process, asking the same question gets the stored answer without a call.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path

from autointerp.errors import LLMError
from autointerp.llm.base import ChatBackend, ChatRequest, ChatResponse

CACHE_FILE = "responses.sqlite"


def default_cache_path() -> Path:
    """Returns `$AUTOINTERP_CACHE/llm-cache/responses.sqlite` (default `~/.cache/autointerp/...`)."""
    root = Path(os.environ.get("AUTOINTERP_CACHE", Path.home() / ".cache" / "autointerp"))
    return root / "llm-cache" / CACHE_FILE


def cache_key(backend: ChatBackend, request: ChatRequest) -> str:
    """Returns the sha256 of everything that determines the answer to `request` from `backend`."""
    identity = {
        "backend": backend.backend,
        "model": backend.model,
        "base_url": getattr(backend, "base_url", None),
        "request": request.model_dump(mode="json"),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


class ResponseCache:
    """A key -> ChatResponse table in SQLite; safe to share between threads and processes."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_cache_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._con = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False, isolation_level=None)
            self._con.execute("PRAGMA journal_mode=WAL")
            self._con.execute(
                "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, backend TEXT, response TEXT,"
                " created_at REAL)"
            )
        except (OSError, sqlite3.Error) as exc:
            raise LLMError(f"cannot open the LLM response cache {self.path}: {exc}; set llm.cache_path") from None
        self._lock = threading.Lock()

    def get(self, key: str) -> ChatResponse | None:
        """Returns the stored answer for `key`, or None."""
        with self._lock:
            row = self._con.execute("SELECT response FROM responses WHERE key = ?", [key]).fetchone()
        return None if row is None else ChatResponse.model_validate_json(row[0])

    def put(self, key: str, backend: str, response: ChatResponse) -> None:
        """Stores the answer for `key` (a later answer to the same key replaces it)."""
        with self._lock:
            self._con.execute(
                "INSERT OR REPLACE INTO responses (key, backend, response, created_at) VALUES (?, ?, ?, ?)",
                [key, backend, response.model_dump_json(), time.time()],
            )

    def __len__(self) -> int:
        with self._lock:
            row = self._con.execute("SELECT count(*) FROM responses").fetchone()
        return int(row[0])

    def close(self) -> None:
        """Closes the file."""
        with self._lock:
            self._con.close()
