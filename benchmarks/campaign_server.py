"""The campaign benchmark's server: a loopback OpenAI-compatible server that knows the right answer
(feature i fires on one made-up word), with a fixed latency and injected HTTP 429s, run in its own
process (`ServerProcess`; `python benchmarks/campaign_server.py --serve LATENCY RATE_429`)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.llm.loopback_server import VLLMResponder, split_tokens  # noqa: E402

REASONS = {200: "OK", 400: "Bad Request", 429: "Too Many Requests"}


def word_of(index: int) -> str:
    """Returns feature `index`'s made-up word (letters only: one token)."""
    letters = ""
    for _ in range(4):
        index, digit = divmod(index, 26)
        letters += chr(ord("a") + digit)
    return "zq" + letters


def chat_tokens(messages: list[dict[str, Any]]) -> int:
    """Returns the prompt tokens of a chat request: its words, digits and marks, plus 4 per message."""
    return sum(len(split_tokens(str(m["content"]))) + 4 for m in messages)


def knowing_chat(body: dict[str, Any], vllm: VLLMResponder) -> dict[str, Any]:
    """Returns the right chat answer to an explain, simulate or judge request."""
    messages = body["messages"]
    system = messages[0]["content"]
    user = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    named = re.search(r"fires on the word (\w+)", user)
    word = named.group(1) if named else None
    if body.get("logprobs"):  # P("yes") of a one-window judge (or the backend's probe: "Say yes.")
        parts = re.split(r"Text(?: with marked tokens)?: ", user, maxsplit=1)
        says_yes = len(parts) < 2 or word in parts[1].split("\n")[0].split()
        text_answer = "yes" if says_yes else "no"
        answer = vllm.chat({**body, "messages": [{"role": "user", "content": text_answer}]})
    elif "predict how strongly" in system:
        lines = user.split("one per line:\n", 1)[1].split("\nCopy every token", 1)[0].splitlines()
        text_answer = "\n".join(f"{t}\t{10 if t.strip() == word else 0}" for t in lines)
        answer = vllm.chat(body)
    elif "several numbered texts" in system:
        texts = re.findall(r"^Text \d+(?: with marked tokens)?: (.*)$", user, re.MULTILINE)
        text_answer = "[" + ", ".join("1" if word in t.split() else "0" for t in texts) + "]"
        answer = vllm.chat(body)
    elif "You check descriptions" in system:
        text = re.split(r"Text(?: with marked tokens)?: ", user, maxsplit=1)[1].split("\n")[0]
        text_answer = "yes" if word in text.split() else "no"
        answer = vllm.chat(body)
    else:  # explain: the marked word
        marked = re.search(r"<<\s*(zq\w+)>>", user)
        text_answer = f"The neuron fires on the word {marked.group(1) if marked else 'nothing'}."
        answer = vllm.chat(body)
    answer["choices"][0]["message"]["content"] = text_answer
    completion = len(split_tokens(text_answer)) if not body.get("logprobs") else 1
    prompt = chat_tokens(messages)
    answer["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    return answer


class CampaignServer:
    """The knowing server's event loop: fixed latency, injected 429s, request statistics."""

    def __init__(self, latency_s: float, rate_429: float, seed: int = 0) -> None:
        self.latency_s = latency_s
        self.rate_429 = rate_429
        self.rng = random.Random(seed)
        self.stats = {"requests": 0, "answered": 0, "429": 0, "in_flight": 0, "max_in_flight": 0}

        def value(prompt: str, line: str) -> int:
            named = re.search(r"fires on the word (\w+)", prompt)
            return 10 if named and line.strip() == named.group(1) else 0

        self.vllm = VLLMResponder(
            value=value, p_yes=lambda messages: 0.99 if messages[-1]["content"] == "yes" else 0.01
        )

    async def answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
        if path.endswith("/stats"):
            return 200, {}, dict(self.stats)
        if path.endswith("/models"):  # the backend's first-use probe of the server
            return 200, {}, {"object": "list", "data": [{"id": "campaign", "object": "model"}]}
        self.stats["requests"] += 1
        if self.rng.random() < self.rate_429:
            self.stats["429"] += 1
            error = {"error": {"message": "rate limited (injected)", "type": "rate_limit", "param": None, "code": None}}
            return 429, {"retry-after-ms": "200"}, error
        self.stats["in_flight"] += 1
        self.stats["max_in_flight"] = max(self.stats["max_in_flight"], self.stats["in_flight"])
        try:
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
        finally:
            self.stats["in_flight"] -= 1
        self.stats["answered"] += 1
        if path.endswith("/chat/completions"):
            return 200, {}, knowing_chat(body, self.vllm)
        return 200, {}, self.vllm.completion(body)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_line = await reader.readline()
                if not request_line.strip():
                    break
                path = request_line.decode().split(" ")[1]
                length = 0
                while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = header.decode().partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                raw = await reader.readexactly(length) if length else b"{}"
                try:
                    status, headers, answer = await self.answer(path, json.loads(raw))
                except (ValueError, KeyError, TypeError, IndexError) as exc:  # a malformed request: 400, not a hang-up
                    status, headers = 400, {}
                    answer = {"error": {"message": f"bad request: {exc!r}", "type": "invalid_request_error"}}
                payload = json.dumps(answer).encode()
                head = f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
                head += f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n"
                head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
                writer.write(head.encode() + payload)  # one write: no Nagle / delayed-ACK stall
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def serve(self) -> None:
        server = await asyncio.start_server(self.handle, "127.0.0.1", 0, backlog=512)
        print(server.sockets[0].getsockname()[1], flush=True)
        async with server:
            await server.serve_forever()


class ServerProcess:
    """The knowing server in a child process (so its work does not share the client's GIL)."""

    def __init__(self, latency_s: float, rate_429: float) -> None:
        command = [sys.executable, __file__, "--serve", str(latency_s), str(rate_429)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
        assert self.process.stdout is not None
        self.url = f"http://127.0.0.1:{int(self.process.stdout.readline())}"

    def stats(self) -> dict[str, int]:
        """Returns the server's request counters."""
        request = urllib.request.Request(f"{self.url}/stats", data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            return dict(json.loads(answer.read()))

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        asyncio.run(CampaignServer(float(sys.argv[2]), float(sys.argv[3])).serve())
