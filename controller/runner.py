"""The reconcile runner: workers that drain a controller's queue (controller-runtime style).

Guarantees:

* the runner owns its :class:`~controller.queue.workqueue.WorkQueue`; nothing else touches it
  (event handlers call :meth:`Runner.enqueue`);
* N workers (``workers``) take keys; a key is never reconciled by two workers at once, and a
  key changed during its reconcile is reconciled again afterwards (queue semantics);
* each reconcile runs under ``reconcile_timeout``; the outcome decides what happens to the key:

  ===================================== ================================== =================
  outcome                               queue                              ``result`` label
  ===================================== ================================== =================
  ``Result()``                          forget                             success
  ``Result(requeue_after=s)``           forget, add after ``s`` seconds    requeue_after
  ``Result(requeue=True)``              add rate-limited                   requeue
  :class:`~controller.errors.TerminalError` forget (never retried)         error
  any other exception, or the timeout   add rate-limited (5 ms .. 1000 s)  error
  ===================================== ================================== =================

  and the keys a returned :class:`Result` names in ``wake`` are added at once (plain
  ``add``: deduplicated, and a key being reconciled is reconciled again afterwards), so a
  reconciler can hand work to other keys without touching the queue;

* an unexpected exception (outside :class:`~controller.errors.OpenBaoBackupError`) is logged
  with its key and traceback and counted; it never kills the worker;
* log lines emitted during a reconcile carry ``controller``, ``namespace``, ``name``
  (structlog context variables), so reconcilers need not bind them;
* if a ``gate`` is given (the leader elector's :meth:`holds_lease_now`), it is checked right
  before every reconcile; when it is false the key is put back rate-limited and not
  reconciled (counted in no reconcile metric);
* a reconciler may have an ``async def background()``: it runs beside the workers (e.g. the
  backup manager's lock renewals) and is cancelled with them, so it too runs only while this
  process leads;
* :meth:`Runner.shutdown` stops taking new keys, lets in-flight reconciles finish for up to
  ``drain_timeout`` seconds, then cancels what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

from controller.cache.store import split_key
from controller.errors import OpenBaoBackupError, TerminalError
from controller.logging import get_logger
from controller.metrics import ReconcileMetrics, WorkqueueMetrics
from controller.queue.clock import Clock, RealClock
from controller.queue.ratelimit import RateLimiter
from controller.queue.workqueue import QueueShutDown, WorkQueue


@dataclass(frozen=True, kw_only=True)
class Result:
    """What a reconcile asks for next: nothing, a timed requeue, or a rate-limited one."""

    requeue_after: float | None = None
    requeue: bool = False
    wake: tuple[str, ...] = ()
    """Other keys to enqueue at once (e.g. clusters waiting for the executor slot this
    reconcile freed): the reconciler names them, the runner, which owns the queue, adds them."""


class Reconciler(Protocol):
    async def reconcile(self, *, key: str) -> Result: ...


class Runner:
    def __init__(
        self,
        *,
        name: str,
        reconciler: Reconciler,
        workers: int = 2,
        reconcile_timeout: float = 300.0,
        clock: Clock | None = None,
        rate_limiter: RateLimiter | None = None,
        gate: Callable[[], bool] | None = None,
    ) -> None:
        self.name = name
        self._gate = gate
        self._reconciler = reconciler
        self._workers = workers
        self._timeout = reconcile_timeout
        self._clock: Clock = clock or RealClock()
        self.queue: WorkQueue[str] = WorkQueue(
            name=name, clock=self._clock, rate_limiter=rate_limiter, metrics=WorkqueueMetrics(name)
        )
        self._metrics = ReconcileMetrics(name, workers=workers)
        self._log = get_logger(controller=name)
        self._tasks: list[asyncio.Task[None]] = []

    # -- for event handlers --------------------------------------------------------------
    def enqueue(self, key: str) -> None:
        self.queue.add(key)

    def enqueue_after(self, key: str, delay: float) -> None:
        self.queue.add_after(key, delay)

    # -- running -------------------------------------------------------------------------
    async def run(self) -> None:
        """Run the workers until the queue is shut down and drained."""
        self._tasks = [
            asyncio.create_task(self._worker(), name=f"{self.name}-worker-{i}")
            for i in range(self._workers)
        ]
        self._log.info("workers started", workers=self._workers)
        background = getattr(self._reconciler, "background", None)
        beside = (
            asyncio.create_task(background(), name=f"{self.name}-background")
            if callable(background)
            else None
        )
        try:
            await asyncio.wait(self._tasks)  # workers end on queue shutdown or cancellation
        finally:
            for task in self._tasks:
                task.cancel()
            if beside is not None:
                beside.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if beside is not None:
                await asyncio.gather(beside, return_exceptions=True)

    async def shutdown(self, *, drain_timeout: float) -> None:
        """Stop taking keys; wait up to ``drain_timeout`` for in-flight work, then cancel."""
        if not self._tasks:  # never started (a standby): nothing will drain the queue
            self.queue.shutdown()
            return
        try:
            async with asyncio.timeout(drain_timeout):
                await self.queue.shutdown_with_drain()
        except TimeoutError:
            self._log.warning(
                "drain timed out; cancelling in-flight reconciles",
                in_flight=sorted(self.queue.processing),
            )
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _worker(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except QueueShutDown:
                return
            self._metrics.worker_started()
            try:
                await self.process(key)
            finally:
                self.queue.done(key)
                self._metrics.worker_finished()

    async def process(self, key: str) -> None:
        """Reconcile ``key`` once and decide its fate (exposed for tests)."""
        if self._gate is not None and not self._gate():
            self._log.warning("not reconciling: leadership not fresh", key=key)
            self.queue.add_rate_limited(key)
            return
        namespace, name = split_key(key)
        start = self._clock.monotonic()
        with structlog.contextvars.bound_contextvars(
            controller=self.name, namespace=namespace, name=name
        ):
            outcome = await self._reconcile(key)
            seconds = self._clock.monotonic() - start
            self._log.debug("reconciled", key=key, result=outcome, seconds=round(seconds, 4))
        self._metrics.result(outcome, seconds=seconds)

    async def _reconcile(self, key: str) -> str:
        timeout = asyncio.timeout(self._timeout)
        try:
            async with timeout:
                result = await self._reconciler.reconcile(key=key)
        except TerminalError as exc:
            self._log.error("reconcile failed terminally; not retrying", key=key, error=str(exc))
            self._metrics.error(terminal=True)
            self.queue.forget(key)
            return "error"
        except TimeoutError:
            if not timeout.expired():
                return self._unexpected(key)
            self._log.warning("reconcile timed out", key=key, timeout=self._timeout)
            self._metrics.error()
            self.queue.add_rate_limited(key)
            return "error"
        except OpenBaoBackupError as exc:
            self._log.warning(
                "reconcile failed; will retry",
                key=key,
                error=str(exc),
                error_type=type(exc).__name__,
                requeues=self.queue.num_requeues(key),
            )
            self._metrics.error()
            self.queue.add_rate_limited(key)
            return "error"
        except asyncio.CancelledError:
            raise
        except Exception:
            return self._unexpected(key)
        for other in result.wake:
            self.queue.add(other)
        if result.requeue_after is not None and result.requeue_after > 0:
            self.queue.forget(key)
            self.queue.add_after(key, result.requeue_after)
            return "requeue_after"
        if result.requeue:
            self.queue.add_rate_limited(key)
            return "requeue"
        self.queue.forget(key)
        return "success"

    def _unexpected(self, key: str) -> str:
        self._log.exception("reconcile raised an unexpected exception", key=key)
        self._metrics.error(unexpected=True)
        with contextlib.suppress(Exception):
            self.queue.add_rate_limited(key)
        return "error"
