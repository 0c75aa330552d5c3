"""Nothing outlives the command: Ctrl-C, SIGTERM and kill -9 of `autointerp run` while LLM calls are in flight.

Each case starts the real CLI in a child process against a loopback explainer that answers the
preflight's 1-token probe at once and holds every real explain request for a minute, waits until a
request is in flight (Prefect's temporary server is up by then), signals the run and checks: Ctrl-C
and SIGTERM end it within seconds with one line and exit code 130 / 143; after any of the three,
Prefect's temporary server is gone too; the store still opens and the run resumes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autointerp.store.database import Store
from tests.llm.loopback_server import LoopbackServer, Received, Reply, openai_completion

pytestmark = pytest.mark.slow  # loads the subject model and starts Prefect's temporary server in a child process


def _children(pid: int) -> list[int]:
    """Returns the ids of the live processes whose parent is `pid` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (an orphan's zombie waits for init to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _slow_explainer(request: Received) -> Reply:
    """Answers the preflight's 1-token probe at once; holds every real request for a minute."""
    if request.body.get("max_tokens") == 1:
        return Reply(openai_completion("yes", 5, 1))
    return Reply(openai_completion("the word the.", 11, 5), delay_s=60)


def _start_run(tmp_path: Path, server_url: str, env_extra: dict[str, str] | None = None) -> subprocess.Popen[str]:
    overrides = [
        f"store.path='{tmp_path / 'run.duckdb'}'",
        f"explainer.model='openai-compatible:{server_url}/v1#slow'",
        f"llm.cache_path='{tmp_path / 'cache.sqlite'}'",
        "features.indices=[5, 400]",
        "corpus.max_windows=16",
        "corpus.window_tokens=16",
        "collect.top_k=2",
        "collect.random_windows=1",
        "score.methods=['embedding']",
        "experiments.lowest_n=0",
    ]
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PYTHONPATH"] = str(Path(__file__).parents[1])
    env.update(env_extra or {})
    command = [sys.executable, "-m", "autointerp", "run", *[part for o in overrides for part in ("-s", o)]]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_call_in_flight(process: subprocess.Popen[str], server: LoopbackServer) -> list[int]:
    """Waits until an explain request is held by the server; returns the run's child processes then."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"the run ended early ({process.returncode}): {out[-2000:]} {err[-2000:]}")
        if any(r.body.get("max_tokens") != 1 for r in server.received):
            children = _children(process.pid)
            assert any("uvicorn" in _cmdline(child) for child in children), [_cmdline(c) for c in children]
            return children
        time.sleep(0.2)
    process.kill()
    pytest.fail("no explain request reached the server within 300 s")


def _gone_within(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)
    return [pid for pid in pids if _alive(pid)]


@pytest.mark.parametrize(
    ("how", "code"),
    [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGKILL, -9)],
    ids=["ctrl-c", "sigterm", "kill-9"],
)
def test_a_stopped_run_ends_at_once_and_leaves_no_process(how: signal.Signals, code: int, tmp_path: Path) -> None:
    with LoopbackServer([], respond=_slow_explainer) as server:
        process = _start_run(tmp_path, server.url)
        try:
            children = _wait_for_call_in_flight(process, server)
            sent = time.monotonic()
            process.send_signal(how)
            _, err = process.communicate(timeout=20)
            took = time.monotonic() - sent
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert process.returncode == code, err[-3000:]
    assert took < 10  # not the minute the held call would take
    if how != signal.SIGKILL:
        lines = [line for line in err.splitlines() if line.strip()]
        assert lines[-1] == "interrupted; rerun the same command to resume", err[-3000:]
        assert "Traceback" not in err
    assert _gone_within(children, 10) == []  # Prefect's temporary server died with the run
    store = Store(tmp_path / "run.duckdb")  # nothing half-written: the store opens and holds the collection
    runs = store.runs()
    assert len(runs) == 1 and len(store.features(runs[0]["id"])) == 2
    if how == signal.SIGKILL:  # nothing runs on kill -9: the run still says running
        assert runs[0]["status"] == "running"
    else:  # a signal the run sees: it says so, not "running" for ever
        assert runs[0]["status"] == "interrupted", runs[0]
        assert runs[0]["error"] == f"stopped by {how.name}; rerun the same command to resume"


def test_the_interrupted_line_goes_to_stderr_while_a_progress_bar_shows(tmp_path: Path) -> None:
    """rich's progress display points `sys.stderr` at its console: the line went to stdout, so a user
    redirecting stderr to a file found it empty."""
    with LoopbackServer([], respond=_slow_explainer) as server:
        process = _start_run(tmp_path, server.url, {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1"})
        try:
            _wait_for_call_in_flight(process, server)
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert process.returncode == 143, err[-3000:]
    assert "interrupted; rerun the same command to resume\n" in err and "interrupted" not in out, (
        out[-2000:],
        err[-2000:],
    )
