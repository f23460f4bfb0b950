from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from controller.queue.clock import FakeClock, RealClock
from tests.controller.helpers import settle


async def test_fake_clock_moves_only_when_stepped() -> None:
    clock = FakeClock()
    t0, w0 = clock.monotonic(), clock.now()
    await settle()
    assert clock.monotonic() == t0
    clock.step(2.5)
    assert clock.monotonic() == t0 + 2.5
    assert clock.now() - w0 == timedelta(seconds=2.5)
    with pytest.raises(ValueError, match="backwards"):
        clock.step(-1)


async def test_fake_sleepers_wake_in_order_when_due() -> None:
    clock = FakeClock()
    woke: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append(name)

    tasks = [asyncio.create_task(sleeper(n, s)) for n, s in (("b", 2), ("a", 1), ("c", 3))]
    await settle()
    assert clock.pending_timers == 3
    clock.step(1.5)
    await settle()
    assert woke == ["a"]
    clock.step(10)
    await settle()
    assert woke == ["a", "b", "c"]
    await asyncio.gather(*tasks)


async def test_fake_timers_fire_in_deadline_order_and_cancel() -> None:
    clock = FakeClock()
    fired: list[float] = []
    clock.call_at(clock.monotonic() + 2, lambda: fired.append(clock.monotonic()))
    handle = clock.call_at(clock.monotonic() + 1, lambda: fired.append(-1))
    clock.call_at(clock.monotonic() + 1.5, lambda: fired.append(clock.monotonic()))
    handle.cancel()
    clock.step(5)
    assert fired == [1001.5, 1002.0]  # each fired with the clock at its own deadline
    assert clock.next_deadline() is None


async def test_cancelled_sleep_leaves_no_timer() -> None:
    clock = FakeClock()
    task = asyncio.create_task(clock.sleep(5))
    await settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert clock.pending_timers == 0


async def test_real_clock_basics() -> None:
    clock = RealClock()
    assert clock.now().tzinfo is not None
    start = clock.monotonic()
    await clock.sleep_until(start)  # already due: returns at once
    fired = asyncio.Event()
    clock.call_at(clock.monotonic(), fired.set)
    await asyncio.wait_for(fired.wait(), 1)
