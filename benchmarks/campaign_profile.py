"""Client CPU per call of campaign stages, split by thread group: one stage at one concurrency against the
campaign benchmark's knowing server, after an untimed warm-up run of the same stage (imports, templates).

    PYTHONPATH=. .venv/bin/python benchmarks/campaign_profile.py explain,simulation,detection 300 64 0.5

Arguments: stage name prefixes (comma-separated), features, concurrency, server latency in seconds.
Prints the process's CPU per call (as `campaign.py` reports it) and the CPU per call of the main thread
(pool, reads, DuckDB writes, and the stage's fresh store being written: setup the total leaves out) and
the shared fan-out pool's threads (`fanout`); threads that ended before the end (the stage's own pool)
are in the total only.
"""

from __future__ import annotations

import collections
import os
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402, F401 (imported before timing, as the benchmark's earlier stages have)
import openai  # noqa: E402, F401

from benchmarks.campaign_runs import run_stage, stages  # noqa: E402
from benchmarks.campaign_server import ServerProcess  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu() -> dict[int, float]:
    """Returns CPU seconds per live thread id of this process."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat", encoding="ascii") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / TICK
    return out


def main() -> None:
    which = sys.argv[1].split(",")
    count, concurrency = int(sys.argv[2]), int(sys.argv[3])
    latency = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    os.environ.setdefault("AUTOINTERP_LLM_TIMEOUT", "30")
    server = ServerProcess(latency, 0.0)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for stage in [s for s in stages(4) if any(s.name.startswith(w) for w in which)]:
                run_stage(stage, server, concurrency, 8, 4, Path(tmp))
                before = thread_cpu()
                measured = run_stage(stage, server, concurrency, count, 4, Path(tmp))
                after = thread_cpu()
                names = {t.native_id: t.name.rstrip("0123456789_-") for t in threading.enumerate()}
                groups: dict[str, float] = collections.defaultdict(float)
                for tid, cpu in after.items():
                    groups[names.get(tid, "other")] += cpu - before.get(tid, 0.0)
                per_call = {
                    k: round(1000 * v / measured.calls, 2) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])
                }
                print(
                    f"{stage.name} c{concurrency} n{count} latency {latency}: "
                    f"{measured.cpu_ms_per_call:.2f} ms CPU/call"
                    f" ({measured.calls} calls, checks {measured.checks or 'ok'}); live threads' ms/call {per_call}",
                    flush=True,
                )
    finally:
        server.close()


if __name__ == "__main__":
    main()
