from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from controller.queue.clock import FakeClock
from controller.queue.ratelimit import ItemExponentialFailureRateLimiter
from controller.queue.workqueue import QueueShutDown, WorkQueue
from tests.controller.helpers import settle


class RecordingMetrics:
    def __init__(self) -> None:
        self.adds = 0
        self.depth = 0
        self.queue_durations: list[float] = []
        self.work_durations: list[float] = []
        self.retries = 0
        self.unfinished: Callable[[], float] = lambda: 0.0
        self.longest: Callable[[], float] = lambda: 0.0

    def add(self) -> None:
        self.adds += 1

    def set_depth(self, depth: int) -> None:
        self.depth = depth

    def observe_queue_duration(self, seconds: float) -> None:
        self.queue_durations.append(seconds)

    def observe_work_duration(self, seconds: float) -> None:
        self.work_durations.append(seconds)

    def retry(self) -> None:
        self.retries += 1

    def watch_in_flight(
        self, *, unfinished: Callable[[], float], longest: Callable[[], float]
    ) -> None:
        self.unfinished, self.longest = unfinished, longest


def make(clock: FakeClock | None = None) -> tuple[WorkQueue[str], FakeClock, RecordingMetrics]:
    clock = clock or FakeClock()
    metrics = RecordingMetrics()
    q: WorkQueue[str] = WorkQueue(
        name="t",
        clock=clock,
        metrics=metrics,
        rate_limiter=ItemExponentialFailureRateLimiter(base_delay=1.0, max_delay=8.0),
    )
    return q, clock, metrics


async def get_now(q: WorkQueue[str]) -> str:
    return await asyncio.wait_for(q.get(), 1)


async def test_fifo_order() -> None:
    q, _, _ = make()
    for k in "abc":
        q.add(k)
    assert [await get_now(q) for _ in range(3)] == ["a", "b", "c"]


async def test_add_deduplicates_waiting_items() -> None:
    q, _, m = make()
    q.add("a")
    q.add("b")
    q.add("a")
    assert len(q) == 2
    assert m.adds == 2
    assert await get_now(q) == "a"
    assert await get_now(q) == "b"


async def test_item_is_never_handed_out_twice_concurrently() -> None:
    q, _, _ = make()
    q.add("a")
    assert await get_now(q) == "a"
    q.add("a")  # changed while processing: deferred
    assert len(q) == 0
    getter = asyncio.create_task(q.get())
    await settle()
    assert not getter.done()
    q.done("a")  # now it is queued again
    assert await asyncio.wait_for(getter, 1) == "a"


async def test_readd_during_processing_is_queued_once_after_done() -> None:
    q, _, m = make()
    q.add("a")
    await get_now(q)
    q.add("a")
    q.add("a")
    q.done("a")
    assert len(q) == 1
    assert m.adds == 2
    assert await get_now(q) == "a"
    q.done("a")
    assert len(q) == 0


async def test_done_without_readd_does_not_requeue() -> None:
    q, _, _ = make()
    q.add("a")
    await get_now(q)
    q.done("a")
    q.done("a")  # idempotent
    assert len(q) == 0
    assert q.processing == frozenset()


async def test_many_consumers_each_item_once() -> None:
    q, _, _ = make()
    seen: list[str] = []
    active: set[str] = set()

    async def worker() -> None:
        while True:
            try:
                item = await q.get()
            except QueueShutDown:
                return
            assert item not in active
            active.add(item)
            seen.append(item)
            await asyncio.sleep(0)
            active.discard(item)
            q.done(item)

    workers = [asyncio.create_task(worker()) for _ in range(4)]
    for i in range(50):
        q.add(f"k{i % 20}")
        await asyncio.sleep(0)
    await asyncio.wait_for(q.shutdown_with_drain(), 2)
    await asyncio.wait_for(asyncio.gather(*workers), 2)
    assert set(seen) == {f"k{i}" for i in range(20)}


async def test_add_after_waits_for_the_clock() -> None:
    q, clock, m = make()
    q.add_after("a", 5)
    assert len(q) == 0
    assert q.waiting == 1
    assert m.retries == 1
    getter = asyncio.create_task(q.get())
    clock.step(4.9)
    await settle()
    assert not getter.done()
    clock.step(0.1)
    assert await asyncio.wait_for(getter, 1) == "a"
    assert q.waiting == 0


async def test_add_after_keeps_the_earliest_time() -> None:
    q, clock, _ = make()
    q.add_after("a", 10)
    q.add_after("a", 3)
    q.add_after("a", 7)  # later than the pending 3 s: ignored
    clock.step(3)
    await settle()
    assert len(q) == 1
    assert await get_now(q) == "a"
    q.done("a")
    clock.step(10)  # the superseded 10 s entry must not fire again
    await settle()
    assert len(q) == 0
    assert q.waiting == 0


async def test_add_after_orders_by_ready_time() -> None:
    q, clock, _ = make()
    q.add_after("late", 2)
    q.add_after("early", 1)
    clock.step(5)
    await settle()
    assert [await get_now(q), await get_now(q)] == ["early", "late"]


async def test_add_after_zero_is_add_and_dedups_with_waiting() -> None:
    q, clock, _ = make()
    q.add_after("a", 0)
    assert len(q) == 1
    q.add_after("b", 1)
    q.add("b")  # added now; the delayed copy later dedups (or re-adds after done)
    assert len(q) == 2
    assert await get_now(q) == "a"
    assert await get_now(q) == "b"
    clock.step(1)
    await settle()
    assert len(q) == 0  # b is processing: the delayed add marked it dirty
    q.done("b")
    assert len(q) == 1


async def test_rate_limited_adds_back_off_and_forget_resets() -> None:
    q, clock, _ = make()
    q.add_rate_limited("a")  # 1 s
    q.add_rate_limited("a")  # 2 s, but the 1 s entry is earlier and wins
    assert q.num_requeues("a") == 2
    clock.step(1)
    assert await get_now(q) == "a"
    q.done("a")
    q.add_rate_limited("a")  # 4 s
    clock.step(3.9)
    await settle()
    assert len(q) == 0
    clock.step(0.1)
    await settle()
    assert len(q) == 1
    q.forget("a")
    assert q.num_requeues("a") == 0


async def test_shutdown_hands_out_queued_items_then_raises() -> None:
    q, _, _ = make()
    q.add("a")
    q.add_after("later", 5)
    q.shutdown()
    q.add("b")  # ignored
    q.add_after("c", 1)  # ignored
    assert await get_now(q) == "a"
    with pytest.raises(QueueShutDown):
        await get_now(q)
    assert q.waiting == 0


async def test_shutdown_wakes_blocked_getters() -> None:
    q, _, _ = make()
    getters = [asyncio.create_task(q.get()) for _ in range(3)]
    await settle()
    q.shutdown()
    results = await asyncio.gather(*getters, return_exceptions=True)
    assert all(isinstance(r, QueueShutDown) for r in results)


async def test_shutdown_with_drain_waits_for_in_flight_work() -> None:
    q, _, _ = make()
    q.add("a")
    item = await get_now(q)
    drain = asyncio.create_task(q.shutdown_with_drain())
    await settle()
    assert not drain.done()
    q.done(item)
    await asyncio.wait_for(drain, 1)


async def test_shutdown_with_drain_returns_at_once_when_idle() -> None:
    q, _, _ = make()
    await asyncio.wait_for(q.shutdown_with_drain(), 1)


async def test_cancelled_getter_passes_its_wakeup_on() -> None:
    q, _, _ = make()
    g1 = asyncio.create_task(q.get())
    g2 = asyncio.create_task(q.get())
    await settle()
    q.add("a")  # wakes g1 ...
    g1.cancel()  # ... which is cancelled before it runs
    assert await asyncio.wait_for(g2, 1) == "a"


async def test_metrics_hooks() -> None:
    q, clock, m = make()
    q.add("a")
    assert m.depth == 1
    clock.step(2)
    await get_now(q)
    assert m.depth == 0
    assert m.queue_durations == [2.0]
    clock.step(3)
    assert m.unfinished() == 3.0
    assert m.longest() == 3.0
    q.add("b")
    await get_now(q)
    clock.step(1)
    assert m.unfinished() == 4.0 + 1.0
    assert m.longest() == 4.0
    q.done("a")
    assert m.work_durations == [4.0]
    q.add_rate_limited("x")
    assert m.retries == 1
