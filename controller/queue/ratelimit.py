"""Rate limiters for requeues, as client-go's workqueue has them.

Why hand-written: no maintained asyncio workqueue library exists for Python (kopf has its
own model; the ``kubernetes`` clients ship none), and the behaviour we want is small and
well specified by client-go. Every limiter here is synchronous and non-blocking: ``when``
*reserves* and returns how long the caller must wait; the queue does the waiting.

Guarantees:

* :class:`ItemExponentialFailureRateLimiter`: the n-th ``when(item)`` since the last
  ``forget(item)`` returns ``base x 2^n`` (n from 0), capped at ``max_delay``
  (defaults 5 ms and 1000 s); ``num_requeues`` is n;
* :class:`BucketRateLimiter`: an overall token bucket (default 10 per second, burst 100);
  ``when`` takes a token, possibly going into debt, and returns the time until that token
  exists (like ``golang.org/x/time/rate.Reserve``); it tracks no items;
* :class:`MaxOfRateLimiter`: the largest delay of its members; ``forget`` forgets in all;
* :func:`default_controller_rate_limiter` is max(exponential 5 ms..1000 s, bucket 10/100).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Protocol

from controller.queue.clock import Clock, RealClock


class RateLimiter(Protocol):
    def when(self, item: Hashable) -> float:
        """Seconds the item must wait before its next processing (and count a failure)."""
        ...

    def forget(self, item: Hashable) -> None:
        """Stop tracking the item (it succeeded)."""
        ...

    def num_requeues(self, item: Hashable) -> int:
        """Failures recorded for the item since it was last forgotten."""
        ...


class ItemExponentialFailureRateLimiter:
    """Per-item exponential backoff: base x 2^failures, capped."""

    def __init__(self, *, base_delay: float = 0.005, max_delay: float = 1000.0) -> None:
        if base_delay <= 0 or max_delay < base_delay:
            raise ValueError("need 0 < base_delay <= max_delay")
        self._base = base_delay
        self._max = max_delay
        self._failures: dict[Hashable, int] = {}

    def when(self, item: Hashable) -> float:
        exp = self._failures.get(item, 0)
        self._failures[item] = exp + 1
        if exp >= 1024:  # 2.0**1024 overflows a float
            return self._max
        return min(self._base * 2.0**exp, self._max)

    def forget(self, item: Hashable) -> None:
        self._failures.pop(item, None)

    def num_requeues(self, item: Hashable) -> int:
        return self._failures.get(item, 0)


class BucketRateLimiter:
    """A token bucket shared by all items: ``qps`` tokens per second, at most ``burst``."""

    def __init__(self, *, qps: float = 10.0, burst: int = 100, clock: Clock | None = None) -> None:
        if qps <= 0 or burst < 1:
            raise ValueError("need qps > 0 and burst >= 1")
        self._qps = qps
        self._burst = float(burst)
        self._clock = clock or RealClock()
        self._tokens = float(burst)
        self._last = self._clock.monotonic()

    def when(self, item: Hashable) -> float:
        now = self._clock.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._qps)
        self._last = now
        self._tokens -= 1.0
        # Tolerate float dust (1000.3 - 1000.0 != 0.3) so a token that is due counts as there.
        return 0.0 if self._tokens >= -1e-9 else -self._tokens / self._qps

    def forget(self, item: Hashable) -> None:
        return None

    def num_requeues(self, item: Hashable) -> int:
        return 0


class MaxOfRateLimiter:
    """The worst (longest) delay of several limiters."""

    def __init__(self, *limiters: RateLimiter) -> None:
        if not limiters:
            raise ValueError("need at least one limiter")
        self._limiters = limiters

    def when(self, item: Hashable) -> float:
        return max(limiter.when(item) for limiter in self._limiters)

    def forget(self, item: Hashable) -> None:
        for limiter in self._limiters:
            limiter.forget(item)

    def num_requeues(self, item: Hashable) -> int:
        return max(limiter.num_requeues(item) for limiter in self._limiters)


def default_controller_rate_limiter(*, clock: Clock | None = None) -> MaxOfRateLimiter:
    """client-go's DefaultControllerRateLimiter."""
    return MaxOfRateLimiter(
        ItemExponentialFailureRateLimiter(base_delay=0.005, max_delay=1000.0),
        BucketRateLimiter(qps=10.0, burst=100, clock=clock),
    )
