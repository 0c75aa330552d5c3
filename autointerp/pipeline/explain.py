"""Orient stage: one explanation per live feature, many features at once.

Features are explained by a thread pool as wide as the explainer's concurrency limit (a local
model: one at a time). This thread alone reads exemplars (all at once) and writes results: each
feature whole (its explanation with all its calls), the features finished in the last second
in one transaction, so a run stopped part-way (an error, the budget) keeps every finished
feature and nothing half-written; a rerun skips the features that already have an explain call.
"""

from __future__ import annotations

import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from autointerp.config import RunConfig
from autointerp.explain import ExplainOutcome, explain_feature
from autointerp.llm import CallRecorder, get_backend
from autointerp.llm.calls import LLMSession, open_session
from autointerp.pipeline.common import attempted, live_features, needing_explanation
from autointerp.progress import progress_bar
from autointerp.prompts import load_prompt
from autointerp.store import Store

WRITE_INTERVAL_S = 1.0
"""Finished features are written at least this often (and when the stage ends or stops)."""
WRITE_CALLS = 64
"""...or as soon as this many of their calls are waiting."""


def open_llm_session(config: RunConfig, store: Store, run_id: str) -> LLMSession:
    """Registers the run's LLM session (cache, limits, prices, budget less what the run already spent)."""
    tokens, cost = store.llm_spending(run_id)
    return open_session(run_id, config.llm, spent_tokens=tokens, spent_usd=cost)


def run_explain(config: RunConfig, store: Store, run_id: str) -> int:
    """Orient: writes one explanation per live feature not yet attempted; returns how many were written.

    Raises BudgetExceeded (after writing every feature that finished) when the run reaches its budget.
    """
    backend = get_backend(config.explainer.model)
    session = open_llm_session(config, store, run_id)
    done = attempted(store, run_id, "explain", "feature_id")
    features = [f for f in live_features(store, run_id) if f["id"] not in done]
    if config.schedule.incremental:  # scheduled runs: only new or stale features
        features = needing_explanation(store, run_id, features, backend.name, load_prompt("explain").hash)
    todo = iter(features)
    workers = max(1, min(session.limiter(backend).concurrency, len(features)))

    def explain_one(feature: dict[str, Any], exemplars: list[dict[str, Any]]) -> tuple[ExplainOutcome, CallRecorder]:
        recorder = CallRecorder(run_id, session=session)
        outcome = explain_feature(
            backend,
            recorder,
            feature_id=feature["id"],
            exemplars=exemplars,
            max_activation=feature["max_activation"],
            max_tokens=config.explainer.max_tokens,
            temperature=config.explainer.temperature,
            retries=config.explainer.retries,
        )
        return outcome, recorder

    exemplars = store.exemplars_by_feature(run_id, "explain")
    written = 0
    stopped: BaseException | None = None
    pending: set[Future[tuple[ExplainOutcome, CallRecorder]]] = set()
    finished_rows: dict[str, list[dict[str, Any]]] = {"explanations": [], "llm_calls": []}
    last_write = time.monotonic()
    with (
        ThreadPoolExecutor(workers, thread_name_prefix="explain") as pool,
        progress_bar("explain", total=len(features), unit="features") as advance,
    ):
        while True:
            while stopped is None and len(pending) < 2 * workers:
                feature = next(todo, None)
                if feature is None:
                    break
                pending.add(pool.submit(explain_one, feature, exemplars.pop(feature["id"], [])))
            if pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    try:
                        outcome, recorder = future.result()
                    except Exception as exc:  # budget reached or a config error: finish what is in flight, stop
                        stopped = stopped or exc
                        continue
                    finished_rows["explanations"].extend([outcome.row] if outcome.row else [])
                    finished_rows["llm_calls"].extend(recorder.take())
                    advance(1)
            due = time.monotonic() - last_write >= WRITE_INTERVAL_S or len(finished_rows["llm_calls"]) >= WRITE_CALLS
            if finished_rows["llm_calls"] and (due or not pending):
                # Whole features only (each explanation with all its calls), several per transaction.
                store.write_results(finished_rows)
                written += len(finished_rows["explanations"])
                finished_rows = {"explanations": [], "llm_calls": []}
                last_write = time.monotonic()
            if not pending:
                break
    if stopped is not None:
        raise stopped
    return written
