"""The lean HTTP path of OpenAI-compatible backends: keep-alive connections per thread over plain HTTP, a
connection the server closed while idle replaced without a retry, and proxied or HTTPS servers on httpx."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from autointerp.llm.base import ChatMessage, ChatRequest
from autointerp.llm.lean_http import HTTPStatusFailure, LeanHTTP, direct_plain_http
from autointerp.llm.openai_backend import OpenAICompatibleChatBackend
from autointerp.llm.retry import RetryPolicy

NO_RETRIES = RetryPolicy(max_retries=0)
ROOT = Path(__file__).resolve().parents[2]


def _read_request(conn: socket.socket) -> bytes | None:
    """Returns one HTTP request's body read from `conn`, or None when the client closed it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += conn.recv(65536)
    return body


class KeepAliveServer:
    """HTTP/1.1 on loopback that keeps each connection open for `per_connection` answers, then closes it
    without saying so (as a server's idle timeout does). Counts connections and requests."""

    def __init__(self, per_connection: int, status: int = 200) -> None:
        self.per_connection, self.status = per_connection, status
        self.connections = 0
        self.bodies: list[dict[str, object]] = []
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        """Returns the server's base URL."""
        return f"http://127.0.0.1:{self._socket.getsockname()[1]}/v1"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._socket.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                for _ in range(self.per_connection):
                    body = _read_request(conn)
                    if body is None:
                        break
                    self.bodies.append(json.loads(body))
                    answer = json.dumps(
                        {"choices": [{"message": {"content": f"answer {len(self.bodies)}"}}], "usage": {}}
                    ).encode()
                    reason = "OK" if self.status == 200 else "Too Many Requests"
                    conn.sendall(
                        f"HTTP/1.1 {self.status} {reason}\r\nContent-Type: application/json\r\n"
                        f"Retry-After-Ms: 5\r\nContent-Length: {len(answer)}\r\n\r\n".encode()
                        + answer
                    )

    @contextmanager
    def running(self) -> Iterator[KeepAliveServer]:
        """Serves inside the block."""
        self._thread.start()
        try:
            yield self
        finally:
            self._socket.close()


def request(text: str) -> ChatRequest:
    return ChatRequest(messages=[ChatMessage(role="user", content=text)], max_tokens=8)


def test_one_connection_serves_many_calls_and_a_closed_idle_one_is_replaced_without_a_retry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with KeepAliveServer(per_connection=3).running() as server:
        backend = OpenAICompatibleChatBackend(f"{server.url}#m", timeout_s=5.0, retry=NO_RETRIES)
        answers = [backend.generate(request(f"q{i}")).text for i in range(5)]
    # three calls on the first connection; the server then closed it, and the fourth call went out once
    # more on a fresh connection (no retry: the policy allows none), never twice to the server
    assert answers == [f"answer {i}" for i in range(1, 6)]
    assert [b["messages"][0]["content"] for b in server.bodies] == [f"q{i}" for i in range(5)]  # type: ignore[index]
    assert server.connections == 2


def test_an_error_status_carries_its_headers_for_the_retry_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("http_proxy", raising=False)
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    with KeepAliveServer(per_connection=10, status=429).running() as server:
        lean = LeanHTTP(server.url, "key", 5.0)
        with pytest.raises(HTTPStatusFailure) as failure:
            lean.post("/chat/completions", {"x": 1}, 5.0)
        lean.close()
    assert failure.value.status == 429 and failure.value.headers["retry-after-ms"] == "5"


def test_https_and_proxied_servers_keep_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert direct_plain_http("http://127.0.0.1:8000/v1")
    assert not direct_plain_http("https://api.example.com/v1")
    monkeypatch.setenv("http_proxy", "http://proxy.example:3128")
    assert not direct_plain_http("http://10.0.0.7:8000/v1")
    monkeypatch.setenv("no_proxy", "10.0.0.7")
    assert direct_plain_http("http://10.0.0.7:8000/v1")


def test_a_compatible_server_is_reached_without_importing_the_openai_sdk() -> None:
    """The lean path needs none of the SDK: a process that asks a compatible server (generation, and the
    `/models` question behind a prefill) never imports `openai` (0.4 s of import, and its client objects)."""
    code = textwrap.dedent(
        """
        import sys
        from autointerp.llm.base import ChatMessage, ChatRequest
        from autointerp.llm.openai_backend import OpenAICompatibleChatBackend
        from tests.llm.loopback_server import LoopbackServer, Reply, openai_completion

        request = ChatRequest(messages=[ChatMessage(role="user", content="Hi?")], max_tokens=8, prefill="Explanation:")
        reply = Reply(openai_completion(" the word cat."))
        with LoopbackServer([reply], models=[{"id": "m", "owned_by": "vllm"}]) as server:
            text = OpenAICompatibleChatBackend(f"{server.url}/v1#m", timeout_s=5).generate(request).text
        continued = server.received[-1].body.get("continue_final_message")  # /models said vllm
        print(text, continued, "openai" in sys.modules)
        """
    )
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["the", "word", "cat.", "True", "False"]
