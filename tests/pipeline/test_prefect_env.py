"""Prefect's temporary home is kept per Prefect version; a failed start is one line, quickly."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autointerp.pipeline import prefect_env
from autointerp.pipeline.prefect_env import configure_prefect_defaults, default_prefect_home, prefect_version


def test_the_home_is_per_prefect_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_HOME", raising=False)
    monkeypatch.setenv("AUTOINTERP_CACHE", str(tmp_path))
    configure_prefect_defaults()
    assert os.environ["PREFECT_HOME"] == str(tmp_path / f"prefect-{prefect_version()}")
    assert prefect_version()[0].isdigit()
    monkeypatch.setattr(prefect_env, "prefect_version", lambda: "3.99.0")
    assert default_prefect_home() == tmp_path / "prefect-3.99.0"


def test_a_home_set_by_the_user_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "mine"))
    configure_prefect_defaults()
    assert os.environ["PREFECT_HOME"] == str(tmp_path / "mine")


def test_an_unreachable_api_url_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{port}/api")
    with pytest.raises(prefect_env.PrefectStartError, match=r"does not answer .*prefect server start"):
        prefect_env.start_prefect(timeout_s=5)


@pytest.mark.slow  # starts a real Prefect server process (~20-50 s on two busy cores)
def test_a_broken_prefect_database_fails_fast_with_one_line(tmp_path: Path) -> None:
    """A database the server cannot open (as after another Prefect version migrated it) ends in one
    line that names the folder to remove, as soon as the server process exits (no 60 s wait)."""
    home = tmp_path / "prefect-home"
    home.mkdir()
    (home / "prefect.db").write_bytes(b"not a sqlite database " * 100)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PYTHONPATH=str(Path(__file__).parents[2]))
    script = (
        "from autointerp.pipeline.prefect_env import start_prefect\n"
        "from autointerp.cli.app import error_line\n"
        "try:\n    start_prefect(timeout_s=300)\nexcept Exception as exc:\n    print(error_line(exc))\n"
    )
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=280)
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1, done.stdout + done.stderr
    assert lines[0].startswith("error: Prefect's temporary server exited with code")
    assert "DatabaseError" in lines[0] and f"remove {home}" in lines[0]
    assert "Traceback" not in done.stderr  # the server's traceback went to its log file
    assert (home / prefect_env.SERVER_LOG_NAME).stat().st_size > 0
    assert time.monotonic() - started < 280


def test_a_running_api_is_used_and_no_temporary_server_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import http.server
    import threading

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/api/health" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{httpd.server_address[1]}/api")
        monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
        prefect_env.start_prefect(timeout_s=5)
        assert not (tmp_path / prefect_env.SERVER_LOG_NAME).exists()  # no temporary server was started
    finally:
        httpd.shutdown()
