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
from pathlib import Path

from autointerp.errors import LLMError
from autointerp.llm.base import ChatBackend, ChatRequest, ChatResponse
from autointerp.store.response_cache import ResponseTable

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
        "request": request.logged(),
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


class ResponseCache:
    """A key -> ChatResponse cache (the store's `ResponseTable`); safe to share between threads and processes."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_cache_path()
        try:
            self._table = ResponseTable(self.path)
        except (OSError, sqlite3.Error) as exc:
            raise LLMError(f"cannot open the LLM response cache {self.path}: {exc}; set llm.cache_path") from None

    def get(self, key: str) -> ChatResponse | None:
        """Returns the stored answer for `key`, or None."""
        stored = self._table.get(key)
        return None if stored is None else ChatResponse.model_validate_json(stored)

    def put(self, key: str, backend: str, response: ChatResponse) -> None:
        """Stores the answer for `key` (a later answer to the same key replaces it)."""
        self._table.put(key, backend, response.model_dump_json())

    def __len__(self) -> int:
        return self._table.count()

    def close(self) -> None:
        """Closes the file."""
        self._table.close()
