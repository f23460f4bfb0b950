"""A rate-limited, delaying work queue with client-go semantics, for asyncio.

Guarantees (``K`` is any hashable key; controllers use ``"namespace/name"``):

* FIFO with de-duplication: an item added while it is already waiting is not added twice;
* an item is never handed to two consumers at once: :meth:`WorkQueue.get` marks it
  *processing* until :meth:`WorkQueue.done`; an :meth:`~WorkQueue.add` during processing
  marks it *dirty* and it is queued again only when ``done`` is called;
* :meth:`~WorkQueue.add_after` makes an item ready after a delay; if the item is already
  waiting, the earliest ready time wins; ``add_after(item, 0)`` is ``add``;
* :meth:`~WorkQueue.add_rate_limited` = ``add_after(item, limiter.when(item))``;
  :meth:`~WorkQueue.forget` resets the item's failure count;
  :meth:`~WorkQueue.num_requeues` reports it;
* :meth:`~WorkQueue.shutdown`: new adds are ignored; consumers still receive what was already
  queued, then :meth:`~WorkQueue.get` raises :class:`QueueShutDown`; items delayed but not yet
  ready are dropped. :meth:`~WorkQueue.shutdown_with_drain` additionally waits until every
  item handed out has been marked ``done`` (bound it with ``asyncio.timeout``);
* timing comes from an injectable :class:`~controller.queue.clock.Clock`; metrics go to an
  injectable :class:`QueueMetrics` (the Prometheus one is
  :class:`controller.metrics.WorkqueueMetrics`);
* not thread-safe; safe for any number of coroutines on one event loop (every method but
  ``get`` and ``shutdown_with_drain`` is synchronous and runs without awaiting).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

from controller.queue.clock import Clock, RealClock, TimerHandle
from controller.queue.ratelimit import RateLimiter, default_controller_rate_limiter

K = TypeVar("K", bound=Hashable)


class QueueShutDown(Exception):
    """The queue was shut down and has nothing left to hand out."""


class QueueMetrics(Protocol):
    def add(self) -> None: ...
    def set_depth(self, depth: int) -> None: ...
    def observe_queue_duration(self, seconds: float) -> None: ...
    def observe_work_duration(self, seconds: float) -> None: ...
    def retry(self) -> None: ...
    def watch_in_flight(
        self, *, unfinished: Callable[[], float], longest: Callable[[], float]
    ) -> None: ...


class NoMetrics:
    """Metrics hooks that record nothing."""

    def add(self) -> None:
        return None

    def set_depth(self, depth: int) -> None:
        return None

    def observe_queue_duration(self, seconds: float) -> None:
        return None

    def observe_work_duration(self, seconds: float) -> None:
        return None

    def retry(self) -> None:
        return None

    def watch_in_flight(
        self, *, unfinished: Callable[[], float], longest: Callable[[], float]
    ) -> None:
        return None


class WorkQueue(Generic[K]):
    """FIFO + dirty set + processing set, with delays and per-item rate limiting."""

    def __init__(
        self,
        *,
        name: str = "",
        clock: Clock | None = None,
        rate_limiter: RateLimiter | None = None,
        metrics: QueueMetrics | None = None,
    ) -> None:
        self.name = name
        self._clock: Clock = clock or RealClock()
        self._limiter: RateLimiter = rate_limiter or default_controller_rate_limiter(
            clock=self._clock
        )
        self._metrics: QueueMetrics = metrics or NoMetrics()
        self._queue: deque[K] = deque()
        self._dirty: set[K] = set()
        self._processing: dict[K, float] = {}  # item -> monotonic start
        self._added_at: dict[K, float] = {}  # item -> monotonic time it became queued
        self._waiting: dict[K, float] = {}  # item -> ready time (earliest wins)
        self._heap: list[tuple[float, int, K]] = []
        self._seq = itertools.count()
        self._timer: TimerHandle | None = None
        self._timer_deadline: float | None = None
        self._getters: deque[asyncio.Future[None]] = deque()
        self._drained: list[asyncio.Future[None]] = []
        self._shutting_down = False
        self._metrics.watch_in_flight(
            unfinished=self.unfinished_work_seconds, longest=self.longest_running_seconds
        )

    # -- introspection -------------------------------------------------------------------
    def __len__(self) -> int:
        """Items ready and queued (not delayed, not processing)."""
        return len(self._queue)

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    @property
    def processing(self) -> frozenset[K]:
        return frozenset(self._processing)

    @property
    def waiting(self) -> int:
        """Items delayed by add_after / add_rate_limited and not yet ready."""
        return len(self._waiting)

    def unfinished_work_seconds(self) -> float:
        now = self._clock.monotonic()
        return sum(now - start for start in self._processing.values())

    def longest_running_seconds(self) -> float:
        if not self._processing:
            return 0.0
        return self._clock.monotonic() - min(self._processing.values())

    # -- adding --------------------------------------------------------------------------
    def add(self, item: K) -> None:
        """Queue ``item`` unless it is queued already; defer it if it is being processed."""
        if self._shutting_down or item in self._dirty:
            return
        self._metrics.add()
        self._dirty.add(item)
        if item in self._processing:
            return
        self._push(item)

    def _push(self, item: K) -> None:
        self._queue.append(item)
        self._added_at[item] = self._clock.monotonic()
        self._metrics.set_depth(len(self._queue))
        self._wake_one()

    def add_after(self, item: K, delay: float) -> None:
        """Add ``item`` after ``delay`` seconds; an earlier pending time for it wins."""
        if self._shutting_down:
            return
        self._metrics.retry()
        if delay <= 0:
            self.add(item)
            return
        ready = self._clock.monotonic() + delay
        current = self._waiting.get(item)
        if current is not None and current <= ready:
            return
        self._waiting[item] = ready
        heapq.heappush(self._heap, (ready, next(self._seq), item))
        self._arm_timer()

    def add_rate_limited(self, item: K) -> None:
        """Add ``item`` after the delay its rate limiter asks for (counts a failure)."""
        self.add_after(item, self._limiter.when(item))

    def forget(self, item: K) -> None:
        """Reset the failure count of ``item`` (call after a success)."""
        self._limiter.forget(item)

    def num_requeues(self, item: K) -> int:
        return self._limiter.num_requeues(item)

    # -- delayed items -------------------------------------------------------------------
    def _arm_timer(self) -> None:
        while self._heap and self._waiting.get(self._heap[0][2]) != self._heap[0][0]:
            heapq.heappop(self._heap)  # stale entry: the item got an earlier time or left
        if not self._heap:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._timer_deadline = None
            return
        deadline = self._heap[0][0]
        if self._timer is not None and self._timer_deadline == deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_deadline = deadline
        self._timer = self._clock.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_deadline = None
        now = self._clock.monotonic()
        while self._heap and self._heap[0][0] <= now:
            ready, _, item = heapq.heappop(self._heap)
            if self._waiting.get(item) != ready:
                continue
            del self._waiting[item]
            self.add(item)
        self._arm_timer()

    # -- consuming -----------------------------------------------------------------------
    def _wake_one(self) -> None:
        while self._getters:
            fut = self._getters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def _wake_all(self) -> None:
        while self._getters:
            fut = self._getters.popleft()
            if not fut.done():
                fut.set_result(None)

    async def get(self) -> K:
        """The next ready item, marked processing; raises :class:`QueueShutDown` when done."""
        while not self._queue:
            if self._shutting_down:
                raise QueueShutDown(self.name)
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    self._wake_one()  # pass the wake-up on, or an item could sit unseen
                else:
                    fut.cancel()
                raise
        item = self._queue.popleft()
        now = self._clock.monotonic()
        self._metrics.set_depth(len(self._queue))
        self._metrics.observe_queue_duration(now - self._added_at.pop(item, now))
        self._processing[item] = now
        self._dirty.discard(item)
        return item

    def done(self, item: K) -> None:
        """Mark ``item`` processed; if it was re-added meanwhile, queue it now."""
        start = self._processing.pop(item, None)
        if start is None:
            return
        self._metrics.observe_work_duration(self._clock.monotonic() - start)
        if item in self._dirty:
            self._push(item)
        elif not self._processing:
            for fut in self._drained:
                if not fut.done():
                    fut.set_result(None)
            self._drained.clear()

    # -- stopping ------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Ignore new adds, drop delayed items, let consumers empty the queue, then stop."""
        self._shutting_down = True
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._timer_deadline = None
        self._waiting.clear()
        self._heap.clear()
        self._wake_all()

    async def shutdown_with_drain(self) -> None:
        """:meth:`shutdown`, then wait until every queued and handed-out item is done."""
        self.shutdown()
        while self._processing or self._queue:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._drained.append(fut)
            await fut
