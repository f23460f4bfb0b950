"""Exponential backoff with jitter and reset-after-health, for reconnect loops.

Guarantees:

* :meth:`Backoff.next_delay` returns ``initial`` after a healthy spell, then doubles on each
  consecutive failure up to ``maximum`` (client-go's reflector: 0.8 s doubling to 30 s);
* each delay is stretched by a random factor in ``[1, 1 + jitter)`` and never exceeds
  ``maximum``, so restarting clients do not stampede the API server in lockstep;
* "healthy spell": if more than ``reset_after`` seconds (default 120) have passed since the
  previous failure, the sequence starts again at ``initial``; :meth:`Backoff.reset` does
  this explicitly;
* time comes from an injectable clock; the object itself never sleeps.
"""

from __future__ import annotations

import random

from controller.queue.clock import Clock, RealClock


class Backoff:
    def __init__(
        self,
        *,
        initial: float = 0.8,
        maximum: float = 30.0,
        factor: float = 2.0,
        jitter: float = 0.5,
        reset_after: float = 120.0,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not 0 < initial <= maximum or factor < 1 or jitter < 0:
            raise ValueError("need 0 < initial <= maximum, factor >= 1, jitter >= 0")
        self._initial = initial
        self._maximum = maximum
        self._factor = factor
        self._jitter = jitter
        self._reset_after = reset_after
        self._clock = clock or RealClock()
        self._rng = rng or random.Random()
        self._current: float | None = None
        self._last_failure: float | None = None
        self.failures = 0

    def reset(self) -> None:
        self._current = None
        self._last_failure = None
        self.failures = 0

    def next_delay(self) -> float:
        """Record a failure and return how long to wait before the next attempt."""
        now = self._clock.monotonic()
        if self._last_failure is not None and now - self._last_failure > self._reset_after:
            self.reset()
        self._last_failure = now
        self.failures += 1
        if self._current is None:
            self._current = self._initial
        else:
            self._current = min(self._current * self._factor, self._maximum)
        return min(self._current * (1.0 + self._jitter * self._rng.random()), self._maximum)
