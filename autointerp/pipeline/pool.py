"""The feature pool every LLM stage runs on: many features at once, each written whole, none dropped.

A stage hands the pool its features and a `work` function that turns one feature into a
`FeatureWork` (the rows it produced, with all their LLM calls, or why it was skipped or failed).
The pool runs `work` on as many features at once as the stage's concurrency allows, writes the
finished features in one transaction per batch (at least every WRITE_INTERVAL_S, or sooner when
WRITE_ROWS rows wait), and returns a `StageResult` that counts what was done, skipped and failed.

It keeps submitting until every feature has been worked on. When a feature's work raises a
`StopStage` reason (the budget is reached, the configuration is wrong), the pool submits nothing
more, finishes and writes what is in flight, and reports the stop; the features never started
are counted as not reached, so a rerun resumes them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from autointerp.errors import ConfigError
from autointerp.llm.accounting import BudgetExceeded
from autointerp.llm.base import CapabilityMissing
from autointerp.progress import progress_bar
from autointerp.records import Rows

log = logging.getLogger(__name__)

WRITE_INTERVAL_S = 1.0
"""Finished features are written at least this often (and when the stage ends or stops)."""
WRITE_ROWS = 2048
"""...or as soon as this many of their rows are waiting (LLM call records included: at 64 calls in flight a
transaction per few features cost more client CPU than the calls; one per second is enough)."""

STOPPING_ERRORS: tuple[type[BaseException], ...] = (BudgetExceeded, ConfigError, CapabilityMissing)
"""Errors that stop a stage (the next feature would fail the same way), after what is in flight."""

Item = TypeVar("Item")
Status = Literal["done", "skipped", "failed"]


@dataclass
class FeatureWork:
    """What working on one feature produced: rows to store, and whether it is done."""

    feature_id: str
    rows: Rows = field(default_factory=Rows)
    status: Status = "done"
    reason: str | None = None
    """Why the feature was skipped or failed (None when done)."""

    @classmethod
    def skipped(cls, feature_id: str, reason: str, rows: Rows | None = None) -> FeatureWork:
        """Returns the work of a feature left alone on purpose (it needs nothing, or it gave up)."""
        return cls(feature_id, rows or Rows(), "skipped", reason)

    @classmethod
    def failed(cls, feature_id: str, reason: str, rows: Rows | None = None) -> FeatureWork:
        """Returns the work of a feature that could not be finished (its calls are still kept)."""
        return cls(feature_id, rows or Rows(), "failed", reason)


@dataclass
class StageResult:
    """How a stage went: features done, skipped (by reason) and failed (by feature), and any stop."""

    stage: str
    total: int = 0
    done: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    """Reason -> how many features were skipped for it."""
    failed: dict[str, str] = field(default_factory=dict)
    """Feature id -> why it failed."""
    not_reached: int = 0
    """Features never started because the stage stopped."""
    stopped: str | None = None
    """Why the stage stopped early (budget, configuration), None when it ran to the end."""
    stop_error: BaseException | None = field(default=None, repr=False)
    """The error that stopped it, for a caller that must stop too."""

    @property
    def complete(self) -> bool:
        """True when every feature was done or skipped on purpose."""
        return not self.failed and not self.not_reached and self.stopped is None

    @property
    def undone(self) -> int:
        """Returns how many features are left for a rerun (failed or never reached)."""
        return len(self.failed) + self.not_reached

    def summary(self) -> str:
        """Returns one line: `explain: 14/16 done, 1 skipped (dead), 1 failed (f: LLMError: ...)`."""
        parts = [f"{self.stage}: {self.done}/{self.total} done"]
        parts += [f"{n} skipped ({reason})" for reason, n in sorted(self.skipped.items())]
        if self.failed:
            first_id, first_reason = next(iter(self.failed.items()))
            parts.append(f"{len(self.failed)} failed (first: {first_id}: {first_reason})")
        if self.not_reached:
            parts.append(f"{self.not_reached} not started")
        if self.stopped:
            parts.append(f"stopped: {self.stopped}")
        return ", ".join(parts)

    def count(self, work: FeatureWork) -> None:
        """Adds one finished feature to the tallies."""
        if work.status == "done":
            self.done += 1
        elif work.status == "skipped":
            reason = work.reason or "nothing to do"
            self.skipped[reason] = self.skipped.get(reason, 0) + 1
        else:
            self.failed[work.feature_id] = work.reason or "failed"


class _BatchWriter:
    """Collects finished features and writes them whole, several per transaction."""

    def __init__(self, write: Callable[[Rows], None]) -> None:
        self._write = write
        self._waiting = Rows()
        self._last = time.monotonic()

    def add(self, rows: Rows) -> None:
        self._waiting.extend(rows)
        if len(self._waiting) >= WRITE_ROWS or time.monotonic() - self._last >= WRITE_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        if len(self._waiting):
            self._write(self._waiting)
            self._waiting = Rows()
        self._last = time.monotonic()


@dataclass
class ChunkWork:
    """What working on a chunk of features produced: each finished feature's work, and a stop, if any."""

    works: list[FeatureWork]
    """One per finished feature of the chunk; features of the chunk without one were not reached."""
    stop: BaseException | None = None
    """A STOPPING_ERRORS error met part-way: the finished features are kept, the rest are not reached."""


def run_pool(
    stage: str,
    items: Sequence[Item],
    feature_of: Callable[[Item], str],
    work: Callable[[Item], FeatureWork],
    write: Callable[[Rows], None],
    concurrency: int,
) -> StageResult:
    """Runs `work` over every item with up to `concurrency` in flight; returns the stage's tallies.

    `write` stores a batch of finished features in one transaction. An item whose work raises a
    STOPPING_ERRORS error stops the stage (what is in flight is finished and written); any other
    exception fails that feature only, and the stage goes on.
    """
    return run_chunked_pool(stage, items, feature_of, lambda chunk: ChunkWork([work(chunk[0])]), write, 1, concurrency)


def run_chunked_pool(
    stage: str,
    items: Sequence[Item],
    feature_of: Callable[[Item], str],
    work_chunk: Callable[[list[Item]], ChunkWork],
    write: Callable[[Rows], None],
    chunk_size: int,
    concurrency: int = 1,
) -> StageResult:
    """Runs `work_chunk` over consecutive chunks of `chunk_size` items (a local model generating many
    prompts in one padded batch), up to `concurrency` chunks in flight; returns the stage's tallies, one
    per item, as `run_pool` does.

    A chunk whose work raises a STOPPING_ERRORS error, or returns a `ChunkWork` with a `stop`, stops the
    stage: what it finished is written, its other items and every chunk not started are not reached. Any
    other exception fails the chunk's unfinished items, and the stage goes on.
    """
    result = StageResult(stage, total=len(items))
    writer = _BatchWriter(write)
    size = max(1, chunk_size)
    chunks = [list(items[start : start + size]) for start in range(0, len(items), size)]
    todo: Iterable[list[Item]] = iter(chunks)
    workers = max(1, min(concurrency, len(chunks)))
    in_flight: dict[Future[ChunkWork], list[Item]] = {}

    def submit_more(pool: ThreadPoolExecutor) -> None:
        while result.stopped is None and len(in_flight) < 2 * workers:
            chunk = next(todo, None)  # type: ignore[call-overload]
            if chunk is None:
                return
            in_flight[pool.submit(work_chunk, chunk)] = chunk

    with (
        ThreadPoolExecutor(workers, thread_name_prefix=stage) as pool,
        progress_bar(stage, total=len(items), unit="features") as advance,
    ):
        try:
            submit_more(pool)
            _drain(in_flight, writer, result, feature_of, stage, advance, lambda: submit_more(pool))
        finally:  # an interrupted stage still writes every feature it finished, with its LLM calls
            writer.flush()
    result.not_reached += sum(len(chunk) for chunk in todo)
    return result


def _drain(
    in_flight: dict[Future[ChunkWork], list[Item]],
    writer: _BatchWriter,
    result: StageResult,
    feature_of: Callable[[Item], str],
    stage: str,
    advance: Callable[[int], None],
    submit_more: Callable[[], None],
) -> None:
    """Collects finished chunks into `writer` and `result` until nothing is in flight."""
    while in_flight:
        finished, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
        for future in finished:
            chunk = in_flight.pop(future)
            try:
                outcome = future.result()
            except STOPPING_ERRORS as exc:
                outcome = ChunkWork([], stop=exc)
            except Exception as exc:  # one chunk's bug must not lose the others' work
                log.exception("%s: %s failed", stage, ", ".join(feature_of(item) for item in chunk))
                reason = f"{type(exc).__name__}: {exc}"
                outcome = ChunkWork([FeatureWork.failed(feature_of(item), reason) for item in chunk])
            for work in outcome.works:
                writer.add(work.rows)
                result.count(work)
            advance(len(outcome.works))
            if outcome.stop is not None:
                if result.stop_error is None:
                    result.stop_error, result.stopped = outcome.stop, str(outcome.stop)
                result.not_reached += len(chunk) - len(outcome.works)
            elif len(outcome.works) < len(chunk):
                finished_ids = {work.feature_id for work in outcome.works}
                for item in chunk:
                    if feature_of(item) not in finished_ids:
                        result.count(FeatureWork.failed(feature_of(item), "the chunk's work left it out"))
                advance(len(chunk) - len(outcome.works))
        submit_more()  # refill before deciding whether anything is left
