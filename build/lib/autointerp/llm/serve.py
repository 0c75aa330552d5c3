"""A local OpenAI-compatible server: `transformers serve` pinned to one model folder, offline.

`with TransformersServer(folder) as server:` starts it on a free loopback port, waits until it
answers, and stops it on exit; `server.spec` is the `openai-compatible:...` name to configure.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from autointerp.errors import LLMError


def transformers_command() -> str | None:
    """Returns the `transformers` CLI of this environment (next to the interpreter), or None."""
    beside = Path(sys.executable).parent / "transformers"
    return str(beside) if beside.exists() else shutil.which("transformers")


def free_port() -> int:
    """Returns a loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TransformersServer:
    """`transformers serve` for one local model folder on 127.0.0.1, with the hub switched off."""

    def __init__(self, model_folder: Path | str, device: str = "cpu", startup_timeout_s: float = 180.0) -> None:
        self.model_folder = str(model_folder)
        self.device = device
        self.startup_timeout_s = startup_timeout_s
        self.port = free_port()
        self.model_id = self.model_folder
        """The model name requests must carry: the server is pinned to the folder and names it so."""
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir = tempfile.TemporaryDirectory(prefix="autointerp-serve-")

    @property
    def url(self) -> str:
        """Returns the API base URL, e.g. http://127.0.0.1:41234/v1."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def spec(self) -> str:
        """Returns the `openai-compatible:<url>#<model>` backend name for this server."""
        return f"openai-compatible:{self.url}#{self.model_id}"

    @property
    def log_path(self) -> Path:
        """Returns the file holding the server's output."""
        return Path(self._workdir.name) / "serve.log"

    def start(self) -> TransformersServer:
        """Starts the server and waits until it answers; raises LLMError if it does not."""
        command = transformers_command()
        if command is None:
            raise LLMError("`transformers serve` is not installed: pip install 'transformers[serving]'")
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "HF_HUB_CACHE": str(Path(self._workdir.name) / "hub"),
            "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
        }
        (Path(self._workdir.name) / "hub").mkdir()
        args = [command, "serve", "--host", "127.0.0.1", "--port", str(self.port), "--device", self.device]
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                [*args, "--log-level", "warning", self.model_folder], stdout=log, stderr=subprocess.STDOUT, env=env
            )
        self._wait_until_ready()
        return self

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-500:]
                raise LLMError(f"transformers serve exited with code {self._process.returncode}: {tail}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as answer:
                    if answer.status == 200 and json.loads(answer.read()).get("status") == "ok":
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
                pass
            time.sleep(0.5)
        self.stop()
        raise LLMError(f"transformers serve did not answer within {self.startup_timeout_s:g}s (log: {self.log_path})")

    def served_models(self) -> list[str]:
        """Returns the model ids the server lists at /v1/models ([] when it lists none or fails)."""
        try:
            with urllib.request.urlopen(f"{self.url}/models", timeout=10) as answer:
                return [str(entry["id"]) for entry in json.loads(answer.read()).get("data", [])]
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError, KeyError):
            return []

    def stop(self) -> None:
        """Stops the server (terminate, then kill after 10 s)."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def __enter__(self) -> TransformersServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
        self._workdir.cleanup()
