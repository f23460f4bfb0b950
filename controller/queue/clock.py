"""Time, injectable: the real clock in production, a clock tests step by hand.

Guarantees:

* :class:`Clock` has wall time (:meth:`~Clock.now`, timezone-aware UTC), monotonic time
  (:meth:`~Clock.monotonic`, seconds, for every interval and deadline), awaitable
  :meth:`~Clock.sleep_until` / :meth:`~Clock.sleep` on the monotonic scale, and
  :meth:`~Clock.call_at` for timers that must not need a task of their own;
* :class:`RealClock` is ``time.monotonic`` + the running event loop's timers;
* :class:`FakeClock` never moves by itself: :meth:`FakeClock.step` advances it and, before
  returning, runs every timer that fell due (in deadline order) and wakes every sleeper
  whose deadline passed. Tests therefore never sleep to synchronise; they step the clock
  and let the loop run the woken coroutines.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol


class TimerHandle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """What the queue, the rate limiters, the informers and the elector need of time."""

    def now(self) -> datetime:
        """Wall-clock time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Return once :meth:`monotonic` >= ``deadline``."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return after ``seconds`` of monotonic time."""
        ...

    def call_at(self, deadline: float, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback`` (synchronously, on the loop) once monotonic >= ``deadline``."""
        ...


class RealClock:
    """The system clocks and the running event loop's timers."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep_until(self, deadline: float) -> None:
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def call_at(self, deadline: float, callback: Callable[[], None]) -> TimerHandle:
        loop = asyncio.get_running_loop()
        # The default loop's time() is time.monotonic(); translate anyway to be safe.
        return loop.call_at(loop.time() + (deadline - time.monotonic()), callback)


class _FakeTimer:
    __slots__ = ("callback", "cancelled", "deadline")

    def __init__(self, deadline: float, callback: Callable[[], None]) -> None:
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A clock that moves only when :meth:`step` is called."""

    def __init__(self, *, start: datetime | None = None, monotonic: float = 1000.0) -> None:
        self._wall0 = start or datetime(2030, 1, 1, tzinfo=UTC)
        self._mono0 = monotonic
        self._mono = monotonic
        self._timers: list[tuple[float, int, _FakeTimer]] = []
        self._seq = itertools.count()

    def now(self) -> datetime:
        return self._wall0 + timedelta(seconds=self._mono - self._mono0)

    def monotonic(self) -> float:
        return self._mono

    def call_at(self, deadline: float, callback: Callable[[], None]) -> TimerHandle:
        timer = _FakeTimer(deadline, callback)
        if deadline <= self._mono:
            # Due already: run on the next loop iteration, like loop.call_at would.
            asyncio.get_running_loop().call_soon(self._fire, timer)
        else:
            heapq.heappush(self._timers, (deadline, next(self._seq), timer))
        return timer

    @staticmethod
    def _fire(timer: _FakeTimer) -> None:
        if not timer.cancelled:
            timer.cancelled = True
            timer.callback()

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self._mono:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not fut.done():
                fut.set_result(None)

        timer = self.call_at(deadline, wake)
        try:
            await fut
        finally:
            timer.cancel()

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(self._mono + seconds)

    @property
    def pending_timers(self) -> int:
        """Timers (including sleepers) not yet fired or cancelled."""
        return sum(1 for _, _, t in self._timers if not t.cancelled)

    def next_deadline(self) -> float | None:
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    def step(self, seconds: float) -> None:
        """Advance by ``seconds`` and fire every timer that fell due, in deadline order."""
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        target = self._mono + seconds
        while self._timers and self._timers[0][0] <= target:
            deadline, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self._mono = max(self._mono, deadline)
            self._fire(timer)
        self._mono = target
