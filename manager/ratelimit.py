"""A token bucket that hands out delays, for spreading a burst of keys over time.

Why: one event can map to every object of a kind (a changed ConfigMap re-queues every InferenceService).
Queued at once, 10,000 keys become as many reconciles back to back, and every one that has something to
write writes it as fast as the workers go, which floods the API server. Spread through a bucket, the first
`burst` keys go at once and the rest follow at `rate` per second, so the requests a fan-out can cause per
second are bounded by `rate` times the writes of one reconcile, whatever the number of objects.

The bucket answers with a delay instead of sleeping (golang.org/x/time/rate's `Reserve`, which
controller-runtime's `BucketRateLimiter` uses): each reservation takes a token now, the balance may go
negative, and the delay is the time until the balance is back at zero. The caller schedules the key with
that delay (the work queue's `add_after`), so nothing waits in a handler and the decisions depend only on
the injected clock, which makes them testable without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["TokenBucket"]


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up; `reserve` returns how long to wait for one."""

    def __init__(self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be positive, got {rate!r}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst!r}")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._last = clock()

    def reserve(self) -> float:
        """Take one token; seconds until it is really available (0 when the bucket had one)."""
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate
