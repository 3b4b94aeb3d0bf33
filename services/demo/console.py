"""What the demo prints: one line per step, and a heartbeat while something slow runs."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable


def say(step: str, message: str) -> None:
    print(f"[demo] {step:<10} {message}", flush=True)


@contextlib.asynccontextmanager
async def progress(
    step: str, what: str, every_s: float = 5.0, detail: Callable[[], str] | None = None
) -> AsyncIterator[None]:
    """Print `what ... N s` every few seconds until the block ends, so a slow step never looks stuck."""
    started = time.monotonic()

    async def beat() -> None:
        while True:
            await asyncio.sleep(every_s)
            extra = f" ({detail()})" if detail else ""
            say(step, f"... {what}: {time.monotonic() - started:.0f} s{extra}")

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class StepSkipped(Exception):
    """A step could not run; the message says why, and the demo goes on with the next one."""
