"""The long-lived fan-out pool: results in order, bounded threads reused across calls, nested calls inline,
and the pool's batched writes flushed when a stage is interrupted."""

from __future__ import annotations

import threading
import time

import pytest

from autointerp.llm.executor import THREAD_PREFIX, fan_out
from autointerp.pipeline.pool import FeatureWork, run_pool
from autointerp.records import Explanation, Rows


def test_fan_out_keeps_order_and_reuses_its_threads() -> None:
    names: set[str] = set()
    lock = threading.Lock()

    def work(i: int) -> int:
        with lock:
            names.add(threading.current_thread().name)
        time.sleep(0.001)
        return i * i

    for _ in range(20):  # 20 features, each fanning out 6 calls: one pool of 4 threads serves them all
        assert fan_out(work, list(range(6)), 4) == [i * i for i in range(6)]
    assert names and all(n.startswith(f"{THREAD_PREFIX}-4") for n in names) and len(names) <= 4


def test_nested_fan_out_runs_inline_and_errors_surface() -> None:
    def inner(i: int) -> str:
        return threading.current_thread().name

    outer = fan_out(lambda i: fan_out(inner, [i, i + 1], 2), [0, 1, 2], 2)
    assert all(len(set(names)) == 1 for names in outer)  # each nested fan-out stayed on its caller's thread

    def boom(i: int) -> int:
        if i == 2:
            raise ValueError("item 2")
        return i

    with pytest.raises(ValueError, match="item 2"):
        fan_out(boom, [0, 1, 2, 3], 2)


def test_an_interrupted_stage_writes_the_features_it_finished() -> None:
    written: list[str] = []

    def work(i: int) -> FeatureWork:
        if i == 3:
            time.sleep(0.2)  # the others finish first
            raise KeyboardInterrupt
        rows = Rows(
            [Explanation(run_id="r", feature_id=f"f{i}", text="t", explainer="e", prompt_hash="h", llm_call_id=None)]
        )
        return FeatureWork(f"f{i}", rows)

    def write(rows: Rows) -> None:
        written.extend(r["feature_id"] for r in rows.by_table()["explanations"])

    with pytest.raises(KeyboardInterrupt):
        run_pool("explain", list(range(4)), lambda i: f"f{i}", work, write, concurrency=4)
    assert sorted(written) == ["f0", "f1", "f2"]  # one batch (under WRITE_ROWS), flushed on the way out
