"""A lean HTTP path for OpenAI-compatible servers: JSON posted on keep-alive connections, nothing more.

The `openai` SDK's `post` validates request options, builds headers and wraps the answer for every call;
at 64 calls in flight that was the largest share of the client's CPU per call left after the earlier fixes
(results/benchmarks/campaign.md). A compatible server needs none of it: this client posts the body as JSON
bytes, reuses connections, and reports failures as the retry loop understands them (`lean_failure`).

A server reached over plain `http://` without a proxy (a local vLLM, llama.cpp, the loopback test servers:
the usual case) gets the standard library's `http.client`, one keep-alive connection per calling thread:
a quarter of `httpx`'s CPU per request (its connection pool, `h11` and request models). HTTPS and proxied
servers keep one `httpx` client (its certificate store and proxy settings, as the SDK would use them).
"""

from __future__ import annotations

import http.client
import json
import threading
import urllib.request
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from autointerp.llm.retry import CallFailure, body_message, status_failure

if TYPE_CHECKING:
    import httpx

MAX_CONNECTIONS = 1024
"""Connections kept open per `httpx` client (the backend's limiter bounds the calls in flight)."""


class HTTPStatusFailure(Exception):
    """A server answered with an HTTP error status."""

    def __init__(self, status: int, headers: dict[str, str], body: str) -> None:
        super().__init__(f"HTTP {status}")
        self.status, self.headers, self.body = status, headers, body


class LeanTransportError(Exception):
    """The connection to the server failed (refused, reset, closed before an answer)."""


class LeanTimeout(LeanTransportError):
    """The server sent nothing within the timeout."""


def direct_plain_http(base_url: str) -> bool:
    """Returns whether `base_url` is plain `http://` reached without a proxy (the environment's
    `http_proxy` / `no_proxy`, as `httpx` reads them)."""
    parts = urlsplit(base_url)
    if parts.scheme != "http" or not parts.hostname:
        return False
    proxies = urllib.request.getproxies()
    return not (proxies.get("http") or proxies.get("all")) or bool(urllib.request.proxy_bypass(parts.hostname))


class _PlainConnections:
    """One keep-alive `http.client` connection per calling thread to one `http://` server."""

    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "", parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.headers = headers
        self._local = threading.local()
        self._open: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _connection(self, timeout_s: float) -> tuple[http.client.HTTPConnection, bool]:
        """Returns (this thread's connection, whether it served a request before)."""
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is not None:
            connection.timeout = timeout_s
            if connection.sock is not None:
                connection.sock.settimeout(timeout_s)
            return connection, True
        connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout_s)
        self._local.connection = connection
        with self._lock:
            self._open.append(connection)
        return connection, False

    def _forget(self, connection: http.client.HTTPConnection) -> None:
        connection.close()
        self._local.connection = None
        with self._lock:
            if connection in self._open:
                self._open.remove(connection)

    def request(
        self, method: str, path: str, data: bytes | None, timeout_s: float
    ) -> tuple[int, dict[str, str], bytes]:
        """Returns (status, headers with lower-case names, body) of one request; a connection the server
        closed while it sat idle is replaced once, at once. Raises LeanTimeout / LeanTransportError."""
        url = f"{self.prefix}/{path.lstrip('/')}"
        for attempt in (0, 1):
            connection, reused = self._connection(timeout_s)
            try:
                connection.request(method, url, body=data, headers=self.headers)
                response = connection.getresponse()
                body = response.read()
            except TimeoutError as exc:  # socket.timeout: connecting, sending or waiting for the answer
                self._forget(connection)
                raise LeanTimeout(str(exc) or "timed out") from None
            except (OSError, http.client.HTTPException) as exc:
                self._forget(connection)
                stale = isinstance(exc, http.client.RemoteDisconnected | ConnectionResetError | BrokenPipeError)
                if reused and stale and attempt == 0:
                    continue  # the server closed the idle connection: nothing was answered, send again
                raise LeanTransportError(f"{type(exc).__name__}: {exc}") from None
            if response.will_close:
                self._forget(connection)
            return response.status, {k.lower(): v for k, v in response.getheaders()}, body
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            open_now, self._open = self._open, []
        for connection in open_now:
            connection.close()


class LeanHTTP:
    """POSTs JSON to `base_url` + path with a bearer key, on connections every call of the backend shares."""

    def __init__(self, base_url: str, api_key: str, timeout_s: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        """Sent as the bearer token; errors are scrubbed of it (the retry loop's `secrets`)."""
        headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self._plain: _PlainConnections | None = None
        self._client: httpx.Client | None = None
        if direct_plain_http(self.base_url):
            self._plain = _PlainConnections(self.base_url, headers)
        else:
            import httpx  # the openai SDK's own HTTP client: installed with it

            limits = httpx.Limits(max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS)
            self._client = httpx.Client(timeout=timeout_s, limits=limits, headers=headers)

    def post(self, path: str, body: dict[str, Any], timeout_s: float) -> str:
        """Returns the text of the answer to POSTing `body` to `path`; raises HTTPStatusFailure for an error
        status, LeanTimeout / LeanTransportError (or httpx's errors, for HTTPS) for timeouts and broken
        connections."""
        return self._request("POST", path, json.dumps(body).encode(), timeout_s)

    def get(self, path: str, timeout_s: float) -> str:
        """Returns the text of the answer to a GET of `path` (a server's `/models`); raises as `post` does."""
        return self._request("GET", path, None, timeout_s)

    def _request(self, method: str, path: str, data: bytes | None, timeout_s: float) -> str:
        if self._plain is not None:
            status, headers, raw = self._plain.request(method, path, data, timeout_s)
            text = raw.decode("utf-8", errors="replace")
            if status >= 400:
                raise HTTPStatusFailure(status, headers, text)
            return text
        assert self._client is not None
        url = f"{self.base_url}/{path.lstrip('/')}"
        response = self._client.request(method, url, content=data, timeout=timeout_s)
        if response.status_code >= 400:
            raise HTTPStatusFailure(response.status_code, dict(response.headers), response.text)
        return response.text

    def close(self) -> None:
        """Closes the connections."""
        if self._plain is not None:
            self._plain.close()
        if self._client is not None:
            self._client.close()


def lean_failure(exc: Exception, timeout_s: float) -> CallFailure | None:
    """Returns the retry loop's view of an exception of the lean path, or None for any other exception."""
    if isinstance(exc, HTTPStatusFailure):
        try:
            detail = body_message(json.loads(exc.body))
        except ValueError:
            detail = exc.body[:200]
        return status_failure(exc.status, exc.headers, detail)
    if isinstance(exc, LeanTimeout):
        return CallFailure(reason=f"no answer within {timeout_s:g}s (timeout)", retryable=True)
    if isinstance(exc, LeanTransportError):
        return CallFailure(reason="connection failed", retryable=True, detail=str(exc))
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        return CallFailure(reason=f"no answer within {timeout_s:g}s (timeout)", retryable=True)
    if isinstance(exc, httpx.TransportError):
        return CallFailure(reason="connection failed", retryable=True, detail=str(exc))
    return None
