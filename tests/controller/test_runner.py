from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import structlog

from controller.errors import ServerError, TerminalError
from controller.metrics import REGISTRY
from controller.queue.clock import FakeClock
from controller.queue.ratelimit import ItemExponentialFailureRateLimiter
from controller.runner import Result, Runner
from tests.controller.helpers import settle, until


class Scripted:
    """A reconciler whose outcome per key is scripted; records calls and concurrency."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.outcomes: dict[str, list[object]] = {}
        self.gates: dict[str, asyncio.Event] = {}
        self.active: set[str] = set()
        self.max_active = 0
        self.overlap = False
        self.context: dict[str, object] = {}

    async def reconcile(self, *, key: str) -> Result:
        if key in self.active:
            self.overlap = True
        self.active.add(key)
        self.max_active = max(self.max_active, len(self.active))
        self.calls[key] += 1
        self.context = dict(structlog.contextvars.get_contextvars())
        try:
            gate = self.gates.get(key)
            if gate is not None:
                await gate.wait()
            script = self.outcomes.get(key) or [Result()]
            outcome = script.pop(0) if len(script) > 1 else script[0]
            if isinstance(outcome, BaseException):
                raise outcome
            assert isinstance(outcome, Result)
            return outcome
        finally:
            self.active.discard(key)


def make(workers: int = 2, timeout: float = 5.0) -> tuple[Runner, Scripted, FakeClock, str]:
    clock = FakeClock()
    rec = Scripted()
    name = f"test-{uuid.uuid4().hex[:8]}"
    runner = Runner(
        name=name,
        reconciler=rec,
        workers=workers,
        reconcile_timeout=timeout,
        clock=clock,
        rate_limiter=ItemExponentialFailureRateLimiter(base_delay=1, max_delay=60),
    )
    return runner, rec, clock, name


def sample(metric: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(metric, labels)
    return 0.0 if value is None else value


async def test_series_are_precreated_at_zero() -> None:
    _, _, _, name = make()
    for result in ("success", "error", "requeue", "requeue_after"):
        assert (
            REGISTRY.get_sample_value(
                "controller_runtime_reconcile_total", {"controller": name, "result": result}
            )
            == 0
        )
    assert REGISTRY.get_sample_value("workqueue_depth", {"name": name}) == 0
    assert REGISTRY.get_sample_value("controller_runtime_active_workers", {"controller": name}) == 0


async def test_success_forgets_and_counts() -> None:
    runner, rec, _, name = make()
    runner.queue.add_rate_limited("ns/a")  # a failure on record ...
    await runner.process("ns/a")
    assert runner.queue.num_requeues("ns/a") == 0  # ... forgotten on success
    assert rec.calls["ns/a"] == 1
    assert rec.context == {"controller": name, "namespace": "ns", "name": "a"}
    assert sample("controller_runtime_reconcile_total", controller=name, result="success") == 1
    assert (
        REGISTRY.get_sample_value(
            "controller_runtime_reconcile_time_seconds_count", {"controller": name}
        )
        == 1
    )


async def test_requeue_after_readds_after_the_delay() -> None:
    runner, rec, clock, name = make()
    rec.outcomes["ns/a"] = [Result(requeue_after=30)]
    await runner.process("ns/a")
    assert runner.queue.waiting == 1
    assert len(runner.queue) == 0
    clock.step(29)
    assert len(runner.queue) == 0
    clock.step(1)
    assert len(runner.queue) == 1
    assert (
        sample("controller_runtime_reconcile_total", controller=name, result="requeue_after") == 1
    )


async def test_requeue_true_is_rate_limited() -> None:
    runner, rec, _, name = make()
    rec.outcomes["ns/a"] = [Result(requeue=True)]
    await runner.process("ns/a")
    assert runner.queue.num_requeues("ns/a") == 1
    assert sample("controller_runtime_reconcile_total", controller=name, result="requeue") == 1


async def test_errors_are_retried_with_backoff_then_forgotten() -> None:
    runner, rec, clock, name = make()
    rec.outcomes["ns/a"] = [ServerError("x"), ServerError("x"), Result()]
    task = asyncio.create_task(runner.run())
    runner.enqueue("ns/a")
    await until(lambda: rec.calls["ns/a"] == 1 and runner.queue.waiting == 1)
    assert runner.queue.num_requeues("ns/a") == 1
    clock.step(1)  # first retry after 1 s
    await until(lambda: rec.calls["ns/a"] == 2 and runner.queue.waiting == 1)
    clock.step(1.5)
    await settle()
    assert rec.calls["ns/a"] == 2  # second retry waits 2 s
    clock.step(0.5)
    await until(lambda: rec.calls["ns/a"] == 3)
    await until(lambda: runner.queue.num_requeues("ns/a") == 0)
    assert sample("controller_runtime_reconcile_errors_total", controller=name) == 2
    assert sample("controller_runtime_reconcile_total", controller=name, result="error") == 2
    await runner.shutdown(drain_timeout=1)
    await task


async def test_terminal_errors_are_not_retried() -> None:
    runner, rec, _, name = make()
    rec.outcomes["ns/a"] = [TerminalError("bad spec")]
    runner.queue.add_rate_limited("ns/a")
    runner.queue.shutdown()  # drop the pending retry; only the terminal path is examined
    await runner.process("ns/a")
    assert runner.queue.waiting == 0
    assert runner.queue.num_requeues("ns/a") == 0
    assert sample("controller_runtime_terminal_reconcile_errors_total", controller=name) == 1
    assert sample("controller_runtime_reconcile_errors_total", controller=name) == 1


async def test_unexpected_exceptions_never_kill_the_worker() -> None:
    runner, rec, _, name = make(workers=1)
    rec.outcomes["ns/bug"] = [KeyError("boom")]
    task = asyncio.create_task(runner.run())
    runner.enqueue("ns/bug")
    runner.enqueue("ns/fine")
    await until(lambda: rec.calls["ns/fine"] == 1)
    assert sample("controller_runtime_reconcile_unexpected_errors_total", controller=name) == 1
    assert runner.queue.num_requeues("ns/bug") == 1
    assert not task.done()
    await runner.shutdown(drain_timeout=1)
    await task


async def test_timeout_is_an_error_and_retried() -> None:
    runner, rec, _, name = make(timeout=0.05)
    rec.gates["ns/slow"] = asyncio.Event()  # never set
    await runner.process("ns/slow")
    assert runner.queue.num_requeues("ns/slow") == 1
    assert sample("controller_runtime_reconcile_total", controller=name, result="error") == 1


async def test_one_key_never_reconciled_concurrently_and_workers_run_in_parallel() -> None:
    runner, rec, _, name = make(workers=3)
    gate = asyncio.Event()
    for key in ("ns/a", "ns/b", "ns/c"):
        rec.gates[key] = gate
    task = asyncio.create_task(runner.run())
    for key in ("ns/a", "ns/b", "ns/c", "ns/a"):
        runner.enqueue(key)
    await until(lambda: len(rec.active) == 3)
    assert sample("controller_runtime_active_workers", controller=name) == 3
    runner.enqueue("ns/a")  # while ns/a runs: deferred, not parallel
    await settle()
    assert rec.calls["ns/a"] == 1
    gate.set()
    await until(lambda: rec.calls["ns/a"] == 2)
    await runner.shutdown(drain_timeout=1)
    await task
    assert not rec.overlap
    assert rec.max_active == 3
    assert sample("controller_runtime_active_workers", controller=name) == 0


async def test_shutdown_drains_in_flight_work() -> None:
    runner, rec, _, _ = make(workers=1)
    rec.gates["ns/a"] = asyncio.Event()
    task = asyncio.create_task(runner.run())
    runner.enqueue("ns/a")
    await until(lambda: "ns/a" in rec.active)
    stopping = asyncio.create_task(runner.shutdown(drain_timeout=5))
    await settle()
    assert not stopping.done()
    runner.enqueue("ns/late")  # ignored after shutdown
    rec.gates["ns/a"].set()
    await asyncio.wait_for(stopping, 2)
    await asyncio.wait_for(task, 2)
    assert rec.calls == Counter({"ns/a": 1})


async def test_shutdown_cancels_after_drain_timeout() -> None:
    runner, rec, _, _ = make(workers=1)
    rec.gates["ns/a"] = asyncio.Event()  # never set
    task = asyncio.create_task(runner.run())
    runner.enqueue("ns/a")
    await until(lambda: "ns/a" in rec.active)
    await asyncio.wait_for(runner.shutdown(drain_timeout=0.05), 2)
    await asyncio.wait_for(task, 2)
    assert not rec.active


async def test_shutdown_of_a_runner_that_never_ran_returns_at_once() -> None:
    runner, _, _, _ = make()
    runner.enqueue("ns/a")  # a standby queues keys but has no workers
    await asyncio.wait_for(runner.shutdown(drain_timeout=30), 1)
    assert runner.queue.shutting_down


async def test_gate_closed_means_no_reconcile() -> None:
    clock = FakeClock()
    rec = Scripted()
    open_ = False
    runner = Runner(
        name=f"test-{uuid.uuid4().hex[:8]}", reconciler=rec, clock=clock, gate=lambda: open_
    )
    await runner.process("ns/a")
    assert rec.calls["ns/a"] == 0
    assert runner.queue.num_requeues("ns/a") == 1
    open_ = True
    await runner.process("ns/a")
    assert rec.calls["ns/a"] == 1
