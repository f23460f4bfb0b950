"""Keeps long-running tasks (informers) alive and tells liveness when it cannot.

Guarantees:

* each supervised coroutine factory runs in its own task; if the coroutine raises (anything
  but cancellation) it is logged, counted (``supervisor_task_restarts_total{task}``) and
  started again after an exponential backoff (1 s doubling to 30 s);
* a coroutine that returns normally is finished and not restarted;
* :meth:`Supervisor.healthy` is false if any supervised task has died more than
  ``max_deaths`` times within the last ``window`` seconds, or if a supervised task stopped
  without being asked to; ``/healthz`` reports it, and the kubelet restarts the pod;
* :meth:`Supervisor.stop` cancels every task and waits for them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from controller import metrics
from controller.logging import get_logger
from controller.queue.backoff import Backoff
from controller.queue.clock import Clock, RealClock


@dataclass
class _Supervised:
    name: str
    factory: Callable[[], Awaitable[None]]
    deaths: deque[float] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None
    finished: bool = False


class Supervisor:
    def __init__(
        self,
        *,
        max_deaths: int = 5,
        window: float = 300.0,
        clock: Clock | None = None,
        restart_initial: float = 1.0,
        restart_max: float = 30.0,
    ) -> None:
        self._max_deaths = max_deaths
        self._window = window
        self._clock: Clock = clock or RealClock()
        self._restart_initial = restart_initial
        self._restart_max = restart_max
        self._items: dict[str, _Supervised] = {}
        self._stopping = False
        self._log = get_logger(component="supervisor")

    def start(self, name: str, factory: Callable[[], Awaitable[None]]) -> None:
        """Start supervising ``factory()`` under ``name`` (unique)."""
        if name in self._items:
            raise ValueError(f"task {name!r} is supervised already")
        item = _Supervised(name=name, factory=factory)
        self._items[name] = item
        metrics.task_registered(name)
        item.task = asyncio.create_task(self._loop(item), name=f"supervised:{name}")

    async def _loop(self, item: _Supervised) -> None:
        backoff = Backoff(
            initial=self._restart_initial,
            maximum=self._restart_max,
            reset_after=self._window,
            clock=self._clock,
        )
        while True:
            try:
                await item.factory()
            except asyncio.CancelledError:
                raise
            except Exception:
                now = self._clock.monotonic()
                item.deaths.append(now)
                metrics.task_restarted(item.name)
                delay = backoff.next_delay()
                self._log.exception(
                    "supervised task died; restarting",
                    task=item.name,
                    delay=round(delay, 2),
                    deaths=len(item.deaths),
                )
                await self._clock.sleep(delay)
                continue
            item.finished = True
            return

    def _recent_deaths(self, item: _Supervised) -> int:
        cutoff = self._clock.monotonic() - self._window
        while item.deaths and item.deaths[0] < cutoff:
            item.deaths.popleft()
        return len(item.deaths)

    def status(self) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        for name, item in self._items.items():
            alive = item.task is not None and not item.task.done()
            out[name] = {
                "alive": alive,
                "finished": item.finished,
                "recent_deaths": self._recent_deaths(item),
            }
        return out

    def healthy(self) -> bool:
        for item in self._items.values():
            if self._recent_deaths(item) > self._max_deaths:
                return False
            dead = item.task is None or item.task.done()
            if dead and not item.finished and not self._stopping:
                return False
        return True

    async def stop(self) -> None:
        self._stopping = True
        tasks = [i.task for i in self._items.values() if i.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
