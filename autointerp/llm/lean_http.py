"""A lean HTTP path for OpenAI-compatible servers: JSON posted with one long-lived keep-alive `httpx` client.

The `openai` SDK's `post` validates request options, builds headers and wraps the answer for every call;
at 64 calls in flight that was the largest share of the client's CPU per call left after the earlier fixes
(results/benchmarks/campaign.md). A compatible server needs none of it: this client posts the body as JSON
bytes, reuses connections, and reports failures as the retry loop understands them (`lean_failure`).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from autointerp.llm.retry import CallFailure, body_message, status_failure

if TYPE_CHECKING:
    import httpx

MAX_CONNECTIONS = 1024
"""Connections kept open per client (the backend's limiter bounds the calls in flight)."""


class HTTPStatusFailure(Exception):
    """A server answered with an HTTP error status."""

    def __init__(self, status: int, headers: dict[str, str], body: str) -> None:
        super().__init__(f"HTTP {status}")
        self.status, self.headers, self.body = status, headers, body


class LeanHTTP:
    """POSTs JSON to `base_url` + path with a bearer key; one connection pool for every thread."""

    def __init__(self, base_url: str, api_key: str, timeout_s: float) -> None:
        import httpx  # the openai SDK's own HTTP client: installed with it

        self.base_url = base_url.rstrip("/")
        limits = httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS)
        self._client: httpx.Client = httpx.Client(
            timeout=timeout_s,
            limits=limits,
            headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
        )

    def post(self, path: str, body: dict[str, Any], timeout_s: float) -> str:
        """Returns the text of the answer to POSTing `body` to `path`; raises HTTPStatusFailure for an error
        status, httpx's errors for timeouts and broken connections."""
        response = self._client.post(
            f"{self.base_url}/{path.lstrip('/')}", content=json.dumps(body).encode(), timeout=timeout_s
        )
        if response.status_code >= 400:
            raise HTTPStatusFailure(response.status_code, dict(response.headers), response.text)
        return response.text

    def close(self) -> None:
        """Closes the connections."""
        self._client.close()


def lean_failure(exc: Exception, timeout_s: float) -> CallFailure | None:
    """Returns the retry loop's view of an exception of the lean path, or None for any other exception."""
    if isinstance(exc, HTTPStatusFailure):
        try:
            detail = body_message(json.loads(exc.body))
        except ValueError:
            detail = exc.body[:200]
        return status_failure(exc.status, exc.headers, detail)
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        return CallFailure(reason=f"no answer within {timeout_s:g}s (timeout)", retryable=True)
    if isinstance(exc, httpx.TransportError):
        return CallFailure(reason="connection failed", retryable=True, detail=str(exc))
    return None
