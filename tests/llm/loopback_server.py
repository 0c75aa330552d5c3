"""A scripted HTTP server on 127.0.0.1 for testing cloud backends without the network.

The server answers each POST with the next `Reply` of its script (the last one repeats) and
records what it received, so tests can count attempts, time the gaps between them, and read
the headers a client sent.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class Reply:
    """One scripted answer."""

    body: dict[str, Any]
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    """Seconds to wait before answering (to provoke a client timeout)."""
    raw: str | None = None
    """Sent instead of `body` as JSON, verbatim (to answer with something that is not JSON)."""


@dataclass(frozen=True)
class Received:
    """One request the server got."""

    path: str
    headers: dict[str, str]
    """Header names lower-cased."""
    body: dict[str, Any]
    at: float
    """time.monotonic() when it arrived."""


class LoopbackServer:
    """ThreadingHTTPServer on an ephemeral loopback port; use as a context manager."""

    def __init__(
        self,
        script: list[Reply],
        respond: Callable[[Received], Reply] | None = None,
        models: list[dict[str, Any]] | None = None,
    ) -> None:
        """`respond`, when given, computes each reply from the request instead of the script. `models`, when
        given, is what `GET .../models` lists (`{"data": models}`); without it a GET is answered 501."""
        self.script = script
        self.respond = respond
        self.models = models
        self.received: list[Received] = []
        self.in_flight = 0
        self.max_in_flight = 0
        """Most requests the server was answering at the same time."""
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        """Returns the server's base URL, e.g. http://127.0.0.1:41234."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def gaps_s(self) -> list[float]:
        """Returns the seconds between consecutive requests."""
        times = [request.at for request in self.received]
        return [later - earlier for earlier, later in itertools.pairwise(times)]

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _next_reply(self, request: Received) -> Reply:
        with self._lock:
            self.received.append(request)
            if self.respond is not None:
                return self.respond(request)
            return self.script[min(len(self.received), len(self.script)) - 1]

    def _enter(self, delta: int) -> None:
        with self._lock:
            self.in_flight += delta
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if server.models is None:
                    self.send_error(501)
                    return
                found = self.path.rstrip("/").endswith("/models")
                payload = json.dumps({"object": "list", "data": server.models} if found else {}).encode()
                self.send_response(200 if found else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                received = Received(
                    path=self.path,
                    headers={key.lower(): value for key, value in self.headers.items()},
                    body=json.loads(self.rfile.read(length) or b"{}"),
                    at=time.monotonic(),
                )
                server._enter(+1)
                try:
                    reply = server._next_reply(received)
                    if reply.delay_s and server._stopping.wait(reply.delay_s):
                        return
                finally:
                    server._enter(-1)
                payload = (reply.raw if reply.raw is not None else json.dumps(reply.body)).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout); nothing to answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def openai_completion(text: str, prompt_tokens: int = 11, completion_tokens: int = 5) -> dict[str, Any]:
    """Returns an OpenAI chat-completions answer body."""
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": "test-model",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def openai_error(message: str, kind: str = "server_error") -> dict[str, Any]:
    """Returns an OpenAI error body."""
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def anthropic_message(text: str, input_tokens: int = 13, output_tokens: int = 7) -> dict[str, Any]:
    """Returns an Anthropic Messages answer body."""
    return {
        "id": "msg_test",
        "type": "message",
        "role": "assistant",
        "model": "test-model",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    }


def anthropic_error(message: str, kind: str = "api_error") -> dict[str, Any]:
    """Returns an Anthropic error body."""
    return {"type": "error", "error": {"type": kind, "message": message}}


def split_tokens(text: str) -> list[str]:
    """Returns a toy tokenization that joins back to `text`: single digits, words with their leading
    space, and every other character alone."""
    return re.findall(r"\d| ?[A-Za-z]+|\s|\S", text)


class VLLMResponder:
    """Answers like vLLM and knows the right answers: `/v1/completions` with `echo` returns the prompt's
    log-probabilities, `value(prompt, line)` getting most mass (0.95) after each `line<TAB>`;
    `/v1/chat/completions` with `logprobs` returns P(yes) = `p_yes(messages)` among the first token's
    top entries (spelled "yes", " Yes", "no", " No") beside a non-answer token.

    `logprobs=False` answers like a server without log-probabilities (null `logprobs`).
    """

    def __init__(
        self,
        value: Callable[[str, str], int] = lambda prompt, line: 0,
        p_yes: Callable[[list[dict[str, Any]]], float] = lambda messages: 0.5,
        *,
        logprobs: bool = True,
        delay_s: float = 0.0,
    ) -> None:
        self.value = value
        self.p_yes = p_yes
        self.logprobs = logprobs
        self.delay_s = delay_s

    def __call__(self, request: Received) -> Reply:
        if request.path.endswith("/completions") and not request.path.endswith("/chat/completions"):
            return Reply(self.completion(request.body), delay_s=self.delay_s)
        return Reply(self.chat(request.body), delay_s=self.delay_s)

    def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        """Returns the `/v1/completions` answer: with echo, the prompt's tokens and top log-probabilities."""
        prompt = str(body["prompt"])
        tokens = split_tokens(prompt)
        logprobs: dict[str, Any] | None = None
        if self.logprobs and body.get("echo") and body.get("logprobs") is not None:
            tops: list[dict[str, float] | None] = [None]
            offsets, offset = [], 0
            for token in tokens:
                offsets.append(offset)
                offset += len(token)
            for i in range(1, len(tokens)):
                tops.append(self.position_top(prompt, tokens, i))
            logprobs = {
                "tokens": tokens,
                "token_logprobs": [None if top is None else top[tok] for tok, top in zip(tokens, tops, strict=True)],
                "top_logprobs": tops,
                "text_offset": offsets,
            }
        return {
            "id": "cmpl-test",
            "object": "text_completion",
            "created": 0,
            "model": str(body.get("model")),
            "choices": [
                {
                    "index": 0,
                    "text": prompt if body.get("echo") else "",
                    "logprobs": logprobs,
                    "finish_reason": "length",
                    "stop_reason": None,
                    "prompt_logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": len(tokens), "completion_tokens": 0, "total_tokens": len(tokens)},
        }

    def position_top(self, prompt: str, tokens: list[str], i: int) -> dict[str, float]:
        """Returns the top log-probabilities predicting token `i` (the actual token is always among them)."""
        line_end = i >= 2 and tokens[i] == "0" and tokens[i - 1] == "\t"
        if not line_end:
            return {tokens[i]: math.log(0.6), "the": math.log(0.1)}
        before = "".join(tokens[:i])
        line = before[before.rfind("\n") + 1 : -1]
        value = self.value(prompt, line)
        top = {str(value): math.log(0.95), "\n": math.log(0.04)}
        top.setdefault("0", -30.0)  # the placeholder itself, as vLLM always adds the prompt token
        return top

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """Returns a chat answer "yes" / "no" with first-token top log-probabilities when asked."""
        p = min(max(self.p_yes(body["messages"]), 1e-9), 1 - 1e-9)
        logprobs = None
        if self.logprobs and body.get("logprobs"):
            top: list[dict[str, Any]] = [
                {"token": "yes", "logprob": math.log(0.7 * p)},
                {"token": " Yes", "logprob": math.log(0.2 * p)},
                {"token": "no", "logprob": math.log(0.8 * (1 - p))},
                {"token": " No", "logprob": math.log(0.1 * (1 - p))},
                {"token": "Answer", "logprob": math.log(0.1)},
            ]
            first = max(top, key=lambda entry: entry["logprob"])
            logprobs = {"content": [{**first, "bytes": None, "top_logprobs": top[: body.get("top_logprobs") or 0]}]}
        completion = openai_completion("yes" if p > 0.5 else "no", prompt_tokens=17, completion_tokens=1)
        completion["choices"][0]["logprobs"] = logprobs
        return completion
