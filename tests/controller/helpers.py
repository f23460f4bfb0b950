"""Small helpers for the controller tests: poll a condition with a deadline, never sleep blind."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def settle(rounds: int = 10) -> None:
    """Let every ready coroutine run (no wall-clock time passes on purpose)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def until(
    predicate: Callable[[], bool], *, timeout: float = 5.0, what: str = "condition"
) -> None:
    """Poll ``predicate`` until true, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


async def until_async(
    predicate: Callable[[], Awaitable[bool]],
    *,
    timeout: float = 30.0,
    what: str = "condition",
    interval: float = 0.1,
) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)
