"""Process wiring shared by every service's `__main__`: logging, signals, orderly shutdown.

A service describes how to start and how to stop; `run_service` starts it,
waits for SIGTERM or SIGINT, and stops it: the gRPC server stops taking calls
and drains, consumers finish and commit the batch in hand, producers flush,
pools close. Nothing acknowledged is dropped on the way down.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Protocol


class Service(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # librdkafka and grpc are chatty at INFO.
    logging.getLogger("grpc").setLevel(logging.WARNING)


async def run_until_signalled(service: Service) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await service.start()
    try:
        await stop.wait()
    finally:
        logging.getLogger(__name__).info("shutting down")
        await service.stop()


def run_service(service: Service, log_level: str = "INFO") -> None:
    configure_logging(log_level)
    asyncio.run(run_until_signalled(service))
