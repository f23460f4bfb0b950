from __future__ import annotations

import asyncio
import random

import aiohttp

from controller.health import HealthServer
from controller.queue.backoff import Backoff
from controller.queue.clock import FakeClock
from controller.supervisor import Supervisor
from tests.controller.helpers import settle, until


def test_backoff_doubles_caps_jitters_and_resets() -> None:
    clock = FakeClock()
    b = Backoff(initial=0.8, maximum=30, jitter=0.0, reset_after=120, clock=clock)
    delays = [b.next_delay() for _ in range(8)]
    assert delays == [0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30, 30]
    clock.step(121)  # a healthy spell
    assert b.next_delay() == 0.8
    jittery = Backoff(initial=1, maximum=30, jitter=0.5, clock=clock, rng=random.Random(1))
    d = [jittery.next_delay() for _ in range(3)]
    assert 1 <= d[0] < 1.5
    assert 2 <= d[1] < 3
    assert 4 <= d[2] < 6
    jittery.reset()
    assert jittery.next_delay() < 1.5
    assert jittery.failures == 1


async def test_supervisor_restarts_and_fails_liveness_on_repeated_deaths() -> None:
    clock = FakeClock()
    sup = Supervisor(max_deaths=2, window=60, clock=clock, restart_initial=1, restart_max=1)
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        raise RuntimeError("boom")

    sup.start("flaky", flaky)
    await until(lambda: runs == 1)
    assert sup.healthy()  # 1 death in the window
    clock.step(1.5)
    await until(lambda: runs == 2)
    assert sup.healthy()
    clock.step(1.5)
    await until(lambda: runs == 3)
    assert not sup.healthy()  # 3 deaths > 2 within 60 s
    assert sup.status()["flaky"]["recent_deaths"] == 3
    await sup.stop()


async def test_supervisor_lets_finished_tasks_be() -> None:
    sup = Supervisor()

    async def quick() -> None:
        return None

    sup.start("quick", quick)
    await settle()
    assert sup.healthy()
    assert sup.status()["quick"]["finished"] is True
    await sup.stop()


async def test_health_endpoints() -> None:
    ready = False
    srv = HealthServer(
        host="127.0.0.1",
        port=0,
        liveness={"ok": lambda: True},
        readiness={"informers": lambda: ready},
    )
    await srv.start()
    try:
        base = f"http://127.0.0.1:{srv.bound_port}"
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{base}/healthz") as r:
                assert r.status == 200
            async with s.get(f"{base}/readyz") as r:
                assert r.status == 500
                assert "informers" in await r.text()
            ready = True
            async with s.get(f"{base}/readyz") as r:
                assert r.status == 200
            srv.add_liveness("broken", lambda: 1 / 0 == 0)
            async with s.get(f"{base}/healthz") as r:
                assert r.status == 500
                assert "broken" in await r.text()
            async with s.get(f"{base}/metrics") as r:
                body = await r.text()
                assert r.status == 200
                assert "workqueue_depth" in body
                assert "_created" not in body
    finally:
        await srv.stop()
    await asyncio.sleep(0)
