"""Retries for cloud backends: exponential backoff with jitter, honouring Retry-After.

A backend turns each SDK exception into a `CallFailure` (HTTP status, Retry-After, whether a
retry can help); `call_with_retries` does the waiting and, once the attempts are spent, raises
one `LLMError` line that names the backend and the status and never holds a secret.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import TypeVar

from autointerp.errors import ConfigError, LLMError

logger = logging.getLogger(__name__)

T = TypeVar("T")

RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})
"""HTTP statuses worth another try: timeouts, rate limits, overload and server errors."""

DEFAULT_TIMEOUT_S = 30.0
"""Seconds a request may take before its first generated token is due (plus `SECONDS_PER_TOKEN` per token
asked for): a 24-token answer may take 36 s, a 1,000-token one 280 s."""
SECONDS_PER_TOKEN = 0.25
"""Seconds added to a request's timeout per token it asks for (a slow local server makes ~5-20 tokens/s)."""
TIMEOUT_ENV = "AUTOINTERP_LLM_TIMEOUT"
MAX_RETRIES_ENV = "AUTOINTERP_LLM_MAX_RETRIES"
STALL_ENV = "AUTOINTERP_LLM_STALL_S"
DEFAULT_STALL_S = 120.0
"""Seconds a server may go without answering any call successfully (while calls keep failing with
timeouts, connection errors or server errors) before the run stops with one line naming it."""


class ServerStalled(ConfigError, LLMError):
    """A server made no progress for `stall_s` seconds: every call failed or timed out. Stops the stage
    (as a ConfigError does: the next feature would wait the same way), rather than failing each feature
    after minutes of retries."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait before calling a backend again."""

    max_retries: int = 3
    """Retries after the first attempt (0: a single attempt)."""
    base_delay_s: float = 1.0
    """Wait before the first retry; doubled for each later one."""
    max_delay_s: float = 30.0
    """Longest backoff wait."""
    max_retry_after_s: float = 120.0
    """Longest wait a server may ask for with Retry-After."""
    jitter: float = 0.5
    """Fraction of each backoff wait that is random, so parallel callers spread out."""

    @classmethod
    def from_env(cls) -> RetryPolicy:
        """Returns the default policy, with `AUTOINTERP_LLM_MAX_RETRIES` applied when set."""
        raw = os.environ.get(MAX_RETRIES_ENV)
        if raw is None:
            return cls()
        try:
            retries = int(raw)
        except ValueError:
            retries = -1
        if retries < 0:
            raise LLMError(f"{MAX_RETRIES_ENV}={raw!r} must be a whole number >= 0")
        return cls(max_retries=retries)

    def backoff_s(self, retry: int) -> float:
        """Returns the wait before retry number `retry` (0-based) when the server gave no Retry-After."""
        delay = min(self.max_delay_s, self.base_delay_s * 2**retry)
        return delay * (1 - self.jitter * random.random())


@dataclass(frozen=True)
class CallFailure:
    """What went wrong in one attempt, in terms the retry loop understands."""

    reason: str
    """Short description, e.g. 'HTTP 429' or 'timeout after 60s'."""
    retryable: bool
    """Whether another attempt may succeed."""
    status: int | None = None
    """HTTP status, if the server answered."""
    retry_after_s: float | None = None
    """Wait the server asked for, if any."""
    detail: str = ""
    """The server's error message, if any (redacted before it reaches an exception)."""


def status_failure(status: int, headers: Mapping[str, str], detail: str = "") -> CallFailure:
    """Returns the failure for an HTTP error status, with the Retry-After it carried."""
    return CallFailure(
        reason=f"HTTP {status}",
        retryable=status in RETRYABLE_STATUSES,
        status=status,
        retry_after_s=parse_retry_after(headers),
        detail=detail,
    )


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Returns the wait in seconds asked for by `retry-after-ms` or `Retry-After`, or None."""
    lower = {key.lower(): value for key, value in headers.items()}
    try:
        if "retry-after-ms" in lower:
            return max(0.0, float(lower["retry-after-ms"]) / 1000)
        if "retry-after" in lower:
            return max(0.0, float(lower["retry-after"]))
    except ValueError:
        pass
    value = lower.get("retry-after")
    if value is None:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _seconds_from_env(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise LLMError(f"{name}={raw!r} must be a number of seconds > 0")
    return value


def timeout_from_env() -> float:
    """Returns the base per-request timeout in seconds: `AUTOINTERP_LLM_TIMEOUT`, or 30 (each request
    adds `SECONDS_PER_TOKEN` per token it asks for: see `request_timeout`)."""
    return _seconds_from_env(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)


def request_timeout(base_s: float, max_tokens: int) -> float:
    """Returns the timeout of a request asking for `max_tokens` tokens: the base plus
    `SECONDS_PER_TOKEN` per token, so a long answer from a slow server is not cut off while a short
    one from a stalled server is given up on soon."""
    return base_s + SECONDS_PER_TOKEN * max(0, max_tokens)


def stall_from_env() -> float:
    """Returns the seconds without progress after which a server is given up on: `AUTOINTERP_LLM_STALL_S`,
    or 120."""
    return _seconds_from_env(STALL_ENV, DEFAULT_STALL_S)


class ServerProgress:
    """When each server (by label) last answered a call, and since when its calls fail: the watchdog
    that stops a run whose calls make no progress, shared by every thread of this process."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failing_since: dict[str, float] = {}
        self._stalled: dict[str, tuple[str, float]] = {}
        """label -> (the error, the clock time until which calls to it fail at once)."""
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def succeeded(self, label: str) -> None:
        """Records an answer from `label`: it makes progress."""
        with self._lock:
            self._failing_since.pop(label, None)

    def failed(self, label: str, started: float, failure: CallFailure, stall_s: float) -> None:
        """Records a failed attempt begun at `started` (clock time); raises ServerStalled when `label`
        has answered nothing for `stall_s` seconds."""
        with self._lock:
            since = min(self._failing_since.get(label, started), started)
            self._failing_since[label] = since
            now = self._clock()
            waited = now - since
            if waited >= stall_s and label not in self._stalled:
                message = (
                    f"{label} made no progress for {waited:.0f} s (last failure: {failure.reason}); "
                    f"is the server overloaded or down? (limit {STALL_ENV}={stall_s:g})"
                )
                self._stalled[label] = (message, now + stall_s)
        self.check(label)

    def check(self, label: str) -> None:
        """Raises ServerStalled when `label` was given up on less than `stall_s` ago (no further call waits
        on it meanwhile); after that, calls may try it again (a later run in the same process)."""
        with self._lock:
            stalled = self._stalled.get(label)
            if stalled is not None and self._clock() >= stalled[1]:
                del self._stalled[label]
                self._failing_since.pop(label, None)
                stalled = None
        if stalled is not None:
            raise ServerStalled(stalled[0])

    def first_retry(self, label: str) -> bool:
        """Returns True the first time it is asked about `label` (its first retry is logged, later ones not)."""
        with self._lock:
            first = label not in self._warned
            self._warned.add(label)
            return first

    def reset(self) -> None:
        """Forgets every server (tests; a new run in the same process)."""
        with self._lock:
            self._failing_since.clear()
            self._stalled.clear()
            self._warned.clear()


PROGRESS = ServerProgress()
"""This process's watchdog over the servers its calls go to."""


def redact(text: str, secrets: Iterable[str]) -> str:
    """Returns `text` on one line, at most 200 characters, with every secret replaced by '***'."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= 200 else text[:197] + "..."


def call_with_retries(
    call: Callable[[], T],
    *,
    describe: Callable[[Exception], CallFailure | None],
    label: str,
    policy: RetryPolicy,
    secrets: Iterable[str] = (),
    sleep: Callable[[float], None] = time.sleep,
    progress: ServerProgress | None = None,
    stall_s: float | None = None,
) -> T:
    """Returns `call()`, retrying the failures `describe` marks retryable.

    `describe` maps an exception to a `CallFailure`, or to None for exceptions that are not
    call failures (those propagate unchanged). After the last attempt, raises `LLMError`
    with a one-line message naming `label`, the failure and the attempts, with `secrets` redacted.
    Retries are not logged one by one: the first retry of a server logs one warning, and the final
    error counts the attempts. `progress` (default: this process's watchdog) raises ServerStalled
    once the server has answered nothing for `stall_s` seconds (default `AUTOINTERP_LLM_STALL_S`, 120).
    """
    secrets = tuple(secrets)
    progress = progress if progress is not None else PROGRESS
    stall_s = stall_s if stall_s is not None else stall_from_env()
    attempt = 0
    while True:
        progress.check(label)
        started = time.monotonic()
        try:
            result = call()
        except Exception as exc:
            failure = describe(exc)
            if failure is None:
                raise
        else:
            progress.succeeded(label)
            return result
        attempt += 1
        if failure.retryable:
            progress.failed(label, started, failure, stall_s)
        if not failure.retryable or attempt > policy.max_retries:
            raise LLMError(failure_message(label, failure, attempt, secrets)) from None
        if failure.retry_after_s is not None:
            delay = min(failure.retry_after_s, policy.max_retry_after_s)
        else:
            delay = policy.backoff_s(attempt - 1)
        if progress.first_retry(label):
            logger.warning(
                "%s: %s; retrying (up to %d times per call; the final error counts the attempts)",
                label,
                redact(failure.reason, secrets),
                policy.max_retries,
            )
        else:
            logger.debug("%s: %s; retry %d/%d in %.2fs", label, failure.reason, attempt, policy.max_retries, delay)
        sleep(delay)


def failure_message(label: str, failure: CallFailure, attempts: int, secrets: Iterable[str]) -> str:
    """Returns the one-line error for a call that failed for good."""
    tries = "1 attempt" if attempts == 1 else f"{attempts} attempts"
    message = f"{label} failed after {tries}: {failure.reason}"
    if failure.detail:
        message += f" ({failure.detail})"
    return redact(message, secrets)


def body_message(body: object) -> str:
    """Returns the error message of an OpenAI- or Anthropic-shaped error body, or ''."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return body_message(error)
        message = body.get("message")
        if isinstance(message, str):
            return message
    return body if isinstance(body, str) else ""


def sdk_failure(exc: Exception, sdk: ModuleType, timeout_s: float) -> CallFailure | None:
    """Returns the failure for an exception of the `openai` or `anthropic` SDK, None for any other.

    Both SDKs share the same exception classes: APIStatusError (an HTTP error answer),
    APITimeoutError, and APIConnectionError.
    """
    if isinstance(exc, sdk.APIStatusError):
        return status_failure(exc.status_code, exc.response.headers, body_message(exc.body))
    if isinstance(exc, sdk.APITimeoutError):
        return CallFailure(reason=f"no answer within {timeout_s:g}s (timeout)", retryable=True)
    if isinstance(exc, sdk.APIConnectionError):
        return CallFailure(reason="connection failed", retryable=True, detail=str(exc.__cause__ or ""))
    return None
