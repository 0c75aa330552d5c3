"""Calling a backend for a pipeline role and recording every call as an `llm_calls` row.

A run's `LLMSession` holds what its calls share: the response cache, the per-backend limits,
the price table and the budget. `open_session` registers it for a run id, so every
`CallRecorder(run_id)` of that run in this process uses it; a run with no session registered
calls backends directly (no cache, no budget, default limits and prices).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autointerp.config import LLMConfig
from autointerp.llm.accounting import Budget, Price, PriceTable
from autointerp.llm.base import ChatBackend, ChatRequest, ChatResponse
from autointerp.llm.cache import ResponseCache, cache_key
from autointerp.llm.limits import CallLimiter, limiter_for
from autointerp.store import now

_caches: dict[Path | None, ResponseCache] = {}
_sessions: dict[str, LLMSession] = {}
_plain_session: LLMSession | None = None
_registry_lock = threading.Lock()


def shared_cache(path: Path | None) -> ResponseCache:
    """Returns this process's ResponseCache for `path` (None: the default file)."""
    with _registry_lock:
        if path not in _caches:
            _caches[path] = ResponseCache(path)
        return _caches[path]


@dataclass
class LLMSession:
    """What the LLM calls of one run share: settings, cache, prices and budget."""

    settings: LLMConfig
    budget: Budget
    prices: PriceTable
    cache: ResponseCache | None

    @classmethod
    def from_settings(cls, settings: LLMConfig, spent_tokens: int = 0, spent_usd: float = 0.0) -> LLMSession:
        """Returns a session for `settings`, counting what the run already spent against its budget."""
        overrides = {key: Price(p.input_per_mtok, p.output_per_mtok) for key, p in settings.prices.items()}
        return cls(
            settings=settings,
            budget=Budget(settings.max_tokens, settings.max_cost_usd, spent_tokens, spent_usd),
            prices=PriceTable(overrides),
            cache=shared_cache(settings.cache_path) if settings.cache else None,
        )

    def cacheable(self, request: ChatRequest) -> bool:
        """True when the answer to `request` may come from, and go to, the cache."""
        return self.cache is not None and (request.temperature == 0 or self.settings.cache_sampled)

    def limiter(self, backend: ChatBackend) -> CallLimiter:
        """Returns the limiter for `backend`: `llm.limits` by `backend:model`, then `backend`, then defaults."""
        settings = self.settings
        specific = settings.limits.get(backend.name) or settings.limits.get(backend.backend)
        concurrency = (specific.concurrency if specific else None) or settings.concurrency
        rpm = (specific.requests_per_minute if specific else None) or settings.requests_per_minute
        if backend.max_concurrency is not None:
            concurrency = min(concurrency, backend.max_concurrency)
        return limiter_for(backend.name, concurrency, rpm)


def open_session(run_id: str, settings: LLMConfig, spent_tokens: int = 0, spent_usd: float = 0.0) -> LLMSession:
    """Registers (or replaces) the session of `run_id` in this process and returns it."""
    session = LLMSession.from_settings(settings, spent_tokens, spent_usd)
    with _registry_lock:
        _sessions[run_id] = session
    return session


def session_for(run_id: str) -> LLMSession:
    """Returns the run's registered session, or the plain one (no cache, no budget) when none is."""
    global _plain_session
    with _registry_lock:
        session = _sessions.get(run_id)
    if session is None:
        if _plain_session is None:
            _plain_session = LLMSession.from_settings(LLMConfig(cache=False))
        session = _plain_session
    return session


@dataclass
class CallRecorder:
    """Calls backends and keeps one row per call, to be written with the results they produced."""

    run_id: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    session: LLMSession | None = None
    """The run's shared cache, limits and budget; None: the one registered for `run_id`."""

    def record(
        self,
        *,
        role: str,
        backend: str,
        model: str,
        prompt_hash: str,
        request: dict[str, Any],
        response: str | None,
        feature_id: str | None,
        explanation_id: str | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
        latency_s: float = 0.0,
        error: str | None = None,
        cost: float = 0.0,
        cached: bool = False,
    ) -> str:
        """Adds a row for a call made elsewhere (e.g. a forward pass); returns its id.

        A cached answer is marked by `"cached": true` in the row's request JSON.
        """
        if cached:
            request = {**request, "cached": True}
        call_id = str(uuid.uuid4())
        self.rows.append(
            {
                "id": call_id,
                "run_id": self.run_id,
                "feature_id": feature_id,
                "explanation_id": explanation_id,
                "role": role,
                "backend": backend,
                "model": model,
                "prompt_hash": prompt_hash,
                "request": json.dumps(request),
                "response": response,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "latency_s": latency_s,
                "cost": cost,
                "error": error,
                "created_at": now(),
            }
        )
        return call_id

    def call(
        self,
        backend: ChatBackend,
        request: ChatRequest,
        *,
        role: str,
        prompt_hash: str,
        feature_id: str | None,
        explanation_id: str | None = None,
    ) -> tuple[ChatResponse | None, str]:
        """Returns (response or None on error, call id); the error is recorded, not raised.

        An identical earlier answer comes from the cache (recorded with `cached`, cost 0, and the
        lookup's time as latency).
        Otherwise the budget is checked, raising BudgetExceeded when the run reached it, and the call
        waits for a slot of the backend's concurrency and rate limits.
        """
        session = self.session or session_for(self.run_id)
        logged: dict[str, Any] = {
            "role": role,
            "backend": backend.backend,
            "model": backend.model,
            "prompt_hash": prompt_hash,
            "request": request.model_dump(mode="json"),
            "feature_id": feature_id,
            "explanation_id": explanation_id,
        }
        key = cache_key(backend, request) if session.cacheable(request) else None
        if key is not None and session.cache is not None:
            looked_up = time.perf_counter()
            hit = session.cache.get(key)
            if hit is not None:
                call_id = self.record(
                    **logged,
                    response=hit.text,
                    input_tokens=hit.input_tokens,
                    output_tokens=hit.output_tokens,
                    latency_s=time.perf_counter() - looked_up,
                    cached=True,
                )
                return hit, call_id
        session.budget.check(self.run_id, backend.backend, backend.model, session.prices)
        with session.limiter(backend).slot():
            started = time.perf_counter()
            try:
                response: ChatResponse | None = backend.generate(request)
                error = None
            except Exception as exc:  # a failed call is a row, never a crash of the run
                response, error = None, f"{type(exc).__name__}: {exc}"
            latency_s = time.perf_counter() - started
        input_tokens = response.input_tokens if response else 0
        output_tokens = response.output_tokens if response else 0
        cost = session.prices.cost(backend.backend, backend.model, input_tokens, output_tokens)
        session.budget.spend(input_tokens + output_tokens, cost)
        if key is not None and session.cache is not None and response is not None:
            session.cache.put(key, backend.name, response)
        call_id = self.record(
            **logged,
            response=None if response is None else response.text,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            latency_s=latency_s,
            error=error,
            cost=cost,
        )
        return response, call_id

    def mark_error(self, call_id: str, error: str) -> None:
        """Records that a call's answer could not be used (e.g. it did not parse)."""
        for row in self.rows:
            if row["id"] == call_id:
                row["error"] = error

    def take(self) -> list[dict[str, Any]]:
        """Returns the rows recorded so far and forgets them."""
        rows, self.rows = self.rows, []
        return rows
