"""Calling a backend for a pipeline role and recording every call as an `LLMCall` record.

A run's `LLMSession` holds what its calls share: the response cache, the per-backend limits,
the price table and the budget. Each flow creates one (`LLMSession.for_run`) and hands it to
every `CallRecorder`; there is no process-global session to fall back on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from autointerp.config import LLMConfig
from autointerp.errors import ConfigError
from autointerp.llm.accounting import Budget, Price, PriceTable
from autointerp.llm.base import CapabilityMissing, ChatBackend, ChatRequest, ChatResponse, Probabilities
from autointerp.llm.cache import ResponseCache, cache_key
from autointerp.llm.limits import CallLimiter, limiter_for
from autointerp.records import LLMCall

T = TypeVar("T")

_caches: dict[Path | None, ResponseCache] = {}
_caches_lock = threading.Lock()


def shared_cache(path: Path | None) -> ResponseCache:
    """Returns this process's ResponseCache for `path` (None: the default file); one file handle per path."""
    with _caches_lock:
        if path not in _caches:
            _caches[path] = ResponseCache(path)
        return _caches[path]


class SpendingSource(Protocol):
    """Anything that can say what a run already spent (the store)."""

    def llm_spending(self, run_id: str) -> tuple[int, float]: ...


@dataclass
class LLMSession:
    """What the LLM calls of one run share: settings, cache, prices and budget."""

    settings: LLMConfig
    budget: Budget
    prices: PriceTable
    cache: ResponseCache | None

    @classmethod
    def for_run(cls, settings: LLMConfig, spending: SpendingSource, run_id: str) -> LLMSession:
        """Returns the session of a run, counting what the run already spent against its budget."""
        tokens, cost = spending.llm_spending(run_id)
        return cls.from_settings(settings, tokens, cost)

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

    def guided(self, backend: ChatBackend, request: ChatRequest, role: str) -> ChatRequest:
        """Returns `request` as `backend` gets it: a guided backend (a local model) gets `llm.local`'s
        guidance against loops for the roles that write free text, and keeps the answer's shape when
        `llm.local.structured`; any other backend gets the request without guidance."""
        local = self.settings.local
        if not backend.guided_generation:
            return request.model_copy(update={"shape": None}) if request.shape is not None else request
        update: dict[str, Any] = {}
        if role in local.guided_roles:
            if request.no_repeat_ngram == 0:
                update["no_repeat_ngram"] = local.no_repeat_ngram
            if request.repetition_penalty == 1.0:
                update["repetition_penalty"] = local.repetition_penalty
        if request.shape is not None and not local.structured:
            update["shape"] = None
        return request.model_copy(update=update) if update else request

    def limiter(self, backend: ChatBackend) -> CallLimiter:
        """Returns the limiter for `backend`: `llm.limits` by `backend:model`, then `backend`, then defaults."""
        settings = self.settings
        specific = settings.limits.get(backend.name) or settings.limits.get(backend.backend)
        concurrency = (specific.concurrency if specific else None) or settings.concurrency
        rpm = (specific.requests_per_minute if specific else None) or settings.requests_per_minute
        if backend.max_concurrency is not None:
            concurrency = min(concurrency, backend.max_concurrency)
        return limiter_for(backend.name, concurrency, rpm)


def server_usage(result: object) -> tuple[int, int] | None:
    """Returns the (input, output) tokens a server counted for a list of `Probabilities` (judges' P("yes")
    read over HTTP), or None when the result carries no such count (a local model, a server without `usage`)."""
    if not isinstance(result, list) or not result or not all(isinstance(r, Probabilities) for r in result):
        return None
    if not any(r.input_tokens or r.output_tokens for r in result):
        return None
    return sum(r.input_tokens for r in result), sum(r.output_tokens for r in result)


def _describe_response(response: ChatResponse) -> tuple[str, int, int]:
    return response.text, response.input_tokens, response.output_tokens


@dataclass
class CallRecorder:
    """Calls backends through a run's session and keeps one `LLMCall` per call, to be written with
    the results they produced. One recorder per feature in flight (it is not shared across threads)."""

    run_id: str
    session: LLMSession
    """The run's cache, limits, prices and budget."""
    rows: list[LLMCall] = field(default_factory=list)

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
        """Adds a record for a call made elsewhere (e.g. a forward pass); returns its id.

        A cached answer is marked by `"cached": true` in the record's request.
        """
        if cached:
            request = {**request, "cached": True}
        call = LLMCall(
            run_id=self.run_id,
            role=role,
            backend=backend,
            model=model,
            prompt_hash=prompt_hash,
            request=request,
            response=response,
            feature_id=feature_id,
            explanation_id=explanation_id,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            latency_s=latency_s,
            cost=cost,
            error=error,
        )
        self.rows.append(call)
        return call.id

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
        request = self.session.guided(backend, request, role)
        logged: dict[str, Any] = {
            "role": role,
            "backend": backend.backend,
            "model": backend.model,
            "prompt_hash": prompt_hash,
            "request": request.logged(),
            "feature_id": feature_id,
            "explanation_id": explanation_id,
        }
        key, cached = self._from_cache(backend, request, logged)
        if cached is not None:
            return cached
        response, call_id = self.measure(
            backend,
            lambda: backend.generate(request),
            role=role,
            prompt_hash=prompt_hash,
            request=logged["request"],
            describe=_describe_response,
            feature_id=feature_id,
            explanation_id=explanation_id,
        )
        self._to_cache(key, backend, response)
        return response, call_id

    def _from_cache(
        self, backend: ChatBackend, request: ChatRequest, logged: dict[str, Any]
    ) -> tuple[str | None, tuple[ChatResponse, str] | None]:
        """Returns (the request's cache key, None when it may not be cached; (answer, call id) when the
        cache holds the answer, recorded as a cached call with the lookup's time as latency)."""
        session = self.session
        key = cache_key(backend, request) if session.cacheable(request) else None
        if key is None or session.cache is None:
            return key, None
        looked_up = time.perf_counter()
        hit = session.cache.get(key)
        if hit is None:
            return key, None
        call_id = self.record(
            **logged,
            response=hit.text,
            input_tokens=hit.input_tokens,
            output_tokens=hit.output_tokens,
            latency_s=time.perf_counter() - looked_up,
            cached=True,
        )
        return key, (hit, call_id)

    def _to_cache(self, key: str | None, backend: ChatBackend, response: ChatResponse | None) -> None:
        """Stores an answer under its cache key (nothing when it may not be cached or the call failed)."""
        if key is not None and self.session.cache is not None and response is not None:
            self.session.cache.put(key, backend.name, response)

    def call_many(
        self,
        backend: ChatBackend,
        requests: Sequence[ChatRequest],
        *,
        role: str,
        prompt_hash: str,
        feature_ids: Sequence[str | None],
    ) -> list[tuple[ChatResponse | None, str]]:
        """Returns (response or None on error, call id) per request, in order; one `LLMCall` row each.

        Answers in the cache come from it (as `call` does); the rest go to the backend in one
        `generate_many` (a local model: padded batches) under the run's budget, checked once before, and
        one slot of the backend's limiter. Each row's latency is the batch's time shared equally, its
        request says `"batched": <requests in the batch>`; a failed batch is an error row per request.
        Raises BudgetExceeded when the run reached its budget, ConfigError / CapabilityMissing as `call`.
        """
        session = self.session
        requests = [session.guided(backend, request, role) for request in requests]
        logged: list[dict[str, Any]] = [
            {
                "role": role,
                "backend": backend.backend,
                "model": backend.model,
                "prompt_hash": prompt_hash,
                "request": request.logged(),
                "feature_id": feature_id,
            }
            for request, feature_id in zip(requests, feature_ids, strict=True)
        ]
        results: list[tuple[ChatResponse | None, str] | None] = [None] * len(requests)
        keys: list[str | None] = []
        for index, request in enumerate(requests):
            key, cached = self._from_cache(backend, request, logged[index])
            keys.append(key)
            results[index] = cached
        misses = [index for index, found in enumerate(results) if found is None]
        if misses:
            session.budget.check(self.run_id, backend.backend, backend.model, session.prices)
            with session.limiter(backend).slot():
                started = time.perf_counter()
                responses: list[ChatResponse] | None
                try:
                    responses = list(backend.generate_many([requests[i] for i in misses]))
                    error = None
                except (ConfigError, CapabilityMissing):
                    raise
                except Exception as exc:  # a failed batch is rows, never a crash of the run
                    responses, error = None, f"{type(exc).__name__}: {exc}"
                latency_s = (time.perf_counter() - started) / len(misses)
            if responses is not None and len(responses) != len(misses):
                error = f"{backend.name} gave {len(responses)} answers to {len(misses)} requests"
                responses = None
            for position, index in enumerate(misses):
                response = responses[position] if responses is not None else None
                tokens_in, tokens_out = (response.input_tokens, response.output_tokens) if response else (0, 0)
                cost = session.prices.cost(backend.backend, backend.model, tokens_in, tokens_out)
                session.budget.spend(tokens_in + tokens_out, cost)
                entry = logged[index]
                call_id = self.record(
                    **{**entry, "request": {**entry["request"], "batched": len(misses)}},
                    response=response.text if response else None,
                    input_tokens=tokens_in,
                    output_tokens=tokens_out,
                    latency_s=max(latency_s, 1e-6),
                    error=error,
                    cost=cost,
                )
                self._to_cache(keys[index], backend, response)
                results[index] = (response, call_id)
        return [found for found in results if found is not None]

    def measure(
        self,
        backend: ChatBackend,
        run: Callable[[], T],
        *,
        role: str,
        prompt_hash: str,
        request: dict[str, Any],
        describe: Callable[[Any], tuple[str, int, int]],
        feature_id: str | None,
        explanation_id: str | None = None,
    ) -> tuple[T | None, str]:
        """Runs one backend operation (`generate`, `read_values`, ...) under the run's budget and the
        backend's limits; returns (its result or None on error, call id). `describe` gives the
        recorded (response text, input tokens, output tokens) of a result. A failure is recorded,
        never raised, except BudgetExceeded (checked before the call)."""
        session = self.session
        session.budget.check(self.run_id, backend.backend, backend.model, session.prices)
        with session.limiter(backend).slot():
            started = time.perf_counter()
            try:
                result: T | None = run()
                error = None
            except (ConfigError, CapabilityMissing):  # the next call would fail the same way: stop the stage
                raise
            except Exception as exc:  # a failed call is a row, never a crash of the run
                result, error = None, f"{type(exc).__name__}: {exc}"
            latency_s = time.perf_counter() - started
        text, input_tokens, output_tokens = describe(result) if result is not None else (None, 0, 0)
        counted = server_usage(result)
        if counted is not None:  # the server's own counts beat the caller's estimate
            input_tokens, output_tokens = counted
        cost = session.prices.cost(backend.backend, backend.model, input_tokens, output_tokens)
        session.budget.spend(input_tokens + output_tokens, cost)
        call_id = self.record(
            role=role,
            backend=backend.backend,
            model=backend.model,
            prompt_hash=prompt_hash,
            request=request,
            response=text,
            feature_id=feature_id,
            explanation_id=explanation_id,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            latency_s=max(latency_s, 1e-6),
            error=error,
            cost=cost,
        )
        return result, call_id

    def mark_error(self, call_id: str, error: str) -> None:
        """Records that a call's answer could not be used (e.g. it did not parse)."""
        for row in self.rows:
            if row.id == call_id:
                row.error = error

    def take(self) -> list[LLMCall]:
        """Returns the calls recorded so far and forgets them."""
        rows, self.rows = self.rows, []
        return rows

    def child(self) -> CallRecorder:
        """Returns a recorder for one thread of this feature's work (same run and session)."""
        return CallRecorder(self.run_id, self.session)
