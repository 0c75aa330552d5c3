"""Quiet, offline Prefect defaults, set before Prefect is imported (its settings read the environment),
and a start of Prefect's temporary server that fails in seconds with one line instead of a hang.

The temporary server's database lives in `$AUTOINTERP_CACHE/prefect-<prefect version>`: a database
that one Prefect version has migrated can stop another version from starting, so two environments
with different Prefect versions never share one.
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from autointerp.errors import AutointerpError
from autointerp.subject.model import cache_dir

log = logging.getLogger(__name__)

_RUN_LOGGERS = ("prefect.task_runs", "prefect.flow_runs")
SERVER_LOG_NAME = "temporary-server.log"
"""File in PREFECT_HOME that receives the temporary server's output (a failed start quotes its last line)."""


class PrefectStartError(AutointerpError):
    """Prefect's server (temporary or at PREFECT_API_URL) cannot be reached or started."""


def prefect_version() -> str:
    """Returns the installed Prefect version (read from package metadata, without importing Prefect)."""
    try:
        return version("prefect")
    except PackageNotFoundError:
        return "unknown"


def default_prefect_home() -> Path:
    """Returns the per-Prefect-version home of the temporary server: `<cache>/prefect-<version>`."""
    return cache_dir() / f"prefect-{prefect_version()}"


def configure_prefect_defaults() -> None:
    """Sets Prefect's home (one per Prefect version), telemetry, log level and server start-up timeout,
    unless the user set them."""
    defaults = {
        "PREFECT_HOME": str(default_prefect_home()),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "60",
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)


def _user_error_names(kind: type[BaseException] = AutointerpError) -> set[str]:
    return {kind.__name__}.union(*(_user_error_names(sub) for sub in kind.__subclasses__()))


class _HideUserErrors(logging.Filter):
    """Drops Prefect's run-log records about an AutointerpError (bad input, a failed LLM): the CLI
    prints those as one line, and a traceback would bury it. Other errors keep their traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], AutointerpError):
            return False
        text = record.getMessage()
        return not any(f"{name}(" in text or f"{name}:" in text for name in _user_error_names())


def hide_user_error_tracebacks() -> None:
    """Installs the filter on Prefect's task- and flow-run loggers (once)."""
    for name in _RUN_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _HideUserErrors) for f in logger.filters):
            logger.addFilter(_HideUserErrors())


@contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Points this process's stdout and stderr file descriptors at `path` for the duration (a child
    process started inside inherits them), then restores them."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for descriptor in (fd, *saved):
            os.close(descriptor)


_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b.*")


def _last_error_line(path: Path) -> str:
    """Returns the last exception line (`module.SomeError: ...`) of the server log, else its last line."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no output"
    raised = [line for line in lines if _EXCEPTION_LINE.match(line)]
    return (raised or lines or ["no output"])[-1][:300]


def _port_was_taken(path: Path) -> bool:
    """True when the server log says its port was already in use (a race with another process)."""
    try:
        return "address already in use" in path.read_text(errors="replace").lower()
    except OSError:
        return False


def _check_api_url(url: str, timeout_s: float) -> None:
    import httpx

    try:
        response = httpx.get(url.rstrip("/") + "/health", timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise PrefectStartError(
            f"the Prefect server at PREFECT_API_URL={url} does not answer ({type(exc).__name__}); "
            "start it with `prefect server start`, or unset PREFECT_API_URL to use a temporary server"
        ) from None
    if response.status_code != 200:
        raise PrefectStartError(
            f"the Prefect server at PREFECT_API_URL={url} answered HTTP {response.status_code} to /health; "
            "check the URL (it ends in /api)"
        )


PR_SET_PDEATHSIG = 1
"""prctl(2) option: the signal a process gets when the thread that started it dies (Linux)."""


def _die_with_this_process() -> Callable[[], None] | None:
    """Returns a `preexec_fn` that makes a child process get SIGTERM when this process dies, however it
    dies (kill -9 included): Linux's PR_SET_PDEATHSIG, set in the child between fork and exec and kept
    across exec. None where that cannot hold: not Linux, no libc, or not the main thread (the signal
    follows the thread that forked, and only the main thread lives as long as the process)."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the line above: nobody to outlive
            os._exit(1)

    return preexec


class _PopenDyingWithUs:
    """Stands in for the `subprocess` module inside Prefect's server module while it starts the server:
    its `Popen` adds the `preexec_fn` of `_die_with_this_process`, everything else is `subprocess`."""

    def __init__(self, preexec: Callable[[], None]) -> None:
        self._preexec = preexec

    def Popen(self, *args: Any, **kwargs: Any) -> subprocess.Popen[Any]:
        kwargs.setdefault("preexec_fn", self._preexec)
        return subprocess.Popen(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(subprocess, name)


@contextmanager
def _server_dies_with_us() -> Iterator[None]:
    """While active, the temporary server that Prefect's `SubprocessASGIServer._run_uvicorn_command`
    starts dies with this process (see `_die_with_this_process`), so neither Ctrl-C, SIGTERM nor kill -9
    of `autointerp run` leaves it orphaned. Prefect's own command line and environment are kept as they
    are; only its module's `subprocess` name is swapped for the moment of the start."""
    from prefect.server.api import server as server_module

    preexec = _die_with_this_process()
    if preexec is None or getattr(server_module, "subprocess", None) is not subprocess:
        yield
        return
    server_module.subprocess = _PopenDyingWithUs(preexec)  # type: ignore[assignment]
    try:
        yield
    finally:
        server_module.subprocess = subprocess


def start_prefect(timeout_s: float | None = None) -> None:
    """Makes sure a Prefect API answers before a flow starts: checks PREFECT_API_URL when set (in the
    environment or the active Prefect profile), otherwise starts Prefect's temporary server (once per
    process) with its output in `$PREFECT_HOME/temporary-server.log`. Returns None once the API
    answers; raises PrefectStartError, one line saying what to do, as soon as the server process
    exits or after `timeout_s` (default: the start-up timeout setting)."""
    configure_prefect_defaults()
    limit = timeout_s or float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "60"))
    from prefect.settings import PREFECT_API_URL

    # the environment first (read now), then the settings: the active profile, or a test harness
    api_url = os.environ.get("PREFECT_API_URL") or PREFECT_API_URL.value()
    if api_url:
        _check_api_url(api_url, min(limit, 10.0))
        return
    import httpx
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    if server.running:
        return
    home = Path(os.environ["PREFECT_HOME"]).expanduser()
    try:
        home.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PrefectStartError(f"cannot create PREFECT_HOME {home}: {exc.strerror or exc}") from None
    server_log = home / SERVER_LOG_NAME
    server.port = server.find_available_port()
    with _output_to(server_log), _server_dies_with_us():
        process = server._run_uvicorn_command()
    deadline = time.monotonic() + limit
    port_retries = 3
    with httpx.Client() as client:
        while True:
            code = process.poll()
            if code is not None and port_retries and _port_was_taken(server_log):
                port_retries -= 1  # another process took the port first: try another one
                server.port = server.find_available_port()
                with _output_to(server_log), _server_dies_with_us():
                    process = server._run_uvicorn_command()
                continue
            if code is not None:
                raise PrefectStartError(
                    f"Prefect's temporary server exited with code {code} ({_last_error_line(server_log)}); "
                    f"if another Prefect version wrote its database, remove {home} (full output in {server_log}), "
                    "or set PREFECT_API_URL to a running server"
                )
            try:
                if client.get(f"{server.api_url}/health", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                process.kill()
                process.wait()
                raise PrefectStartError(
                    f"Prefect's temporary server did not answer within {limit:.0f} s (output in {server_log}); "
                    "raise PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, remove "
                    f"{home}, or set PREFECT_API_URL to a running server"
                )
            time.sleep(0.1)
    server.server_process = process
    server.running = True
    atexit.register(server.stop)
    log.info("Prefect's temporary server is up on %s (home %s)", server.api_url, home)
