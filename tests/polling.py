"""Waiting in tests without sleeping for synchronisation: poll a probe until a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def until(
    probe: Callable[[], Awaitable[Any]],
    *,
    timeout: float = 60.0,
    what: str = "condition",
    interval: float = 0.1,
) -> Any:
    """Poll ``probe`` until it returns a truthy value; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")
