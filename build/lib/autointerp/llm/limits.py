"""Per-backend throughput limits: a cap on calls in flight and a requests-per-minute token bucket.

Limits live in this process (one `CallLimiter` per backend name and settings, shared by every
thread and run); across processes, size each process's share or put a gateway in front.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class TokenBucket:
    """Allows `rate_per_minute` starts per minute, with bursts of up to `burst` at once."""

    def __init__(
        self,
        rate_per_minute: float,
        burst: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate_per_s = rate_per_minute / 60.0
        self.burst = max(1.0, burst)
        self._tokens = self.burst
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Waits until a start is allowed; returns the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate_per_s)
                self._updated = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return waited
                delay = (1.0 - self._tokens) / self.rate_per_s
            self._sleep(delay)
            waited += delay


class CallLimiter:
    """At most `concurrency` calls in flight and, when set, `requests_per_minute` starts per minute."""

    def __init__(self, concurrency: int, requests_per_minute: float | None = None) -> None:
        self.concurrency = concurrency
        self.requests_per_minute = requests_per_minute
        self._slots = threading.BoundedSemaphore(concurrency)
        self._bucket = TokenBucket(requests_per_minute) if requests_per_minute else None

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Holds one call slot (waiting for the rate limit first) for the duration of a call."""
        with self._slots:
            if self._bucket is not None:
                self._bucket.acquire()
            yield


_limiters: dict[tuple[str, int, float | None], CallLimiter] = {}
_limiters_lock = threading.Lock()


def limiter_for(name: str, concurrency: int, requests_per_minute: float | None) -> CallLimiter:
    """Returns the process-wide limiter of backend `name` with these settings."""
    key = (name, concurrency, requests_per_minute)
    with _limiters_lock:
        if key not in _limiters:
            _limiters[key] = CallLimiter(concurrency, requests_per_minute)
        return _limiters[key]
