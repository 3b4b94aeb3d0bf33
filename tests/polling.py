"""Waiting in tests for what happens asynchronously (a consumer, an evaluator, a restart)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def eventually(check: Callable[[], Awaitable[Any] | Any], timeout: float = 90.0, every: float = 0.3) -> Any:
    """Poll `check()` (plain or async) until it returns something truthy or the time is up;
    returns its last result, for the caller to assert on."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(every)
