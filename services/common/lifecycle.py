"""Process wiring shared by every service's `__main__`: logging, signals, orderly shutdown.

A service describes how to start and how to stop; `run_service` starts it,
waits for SIGTERM or SIGINT, and stops it: the gRPC server stops taking calls
and drains, consumers finish and commit the batch in hand, producers flush,
pools close. Nothing acknowledged is dropped on the way down.

`Readiness` is what the gRPC health check reports beside the server itself: a
background worker (a Kafka consumer) that died marks itself down until it runs
again, and health says NOT_SERVING meanwhile.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable
from typing import Protocol

from services.common import telemetry

_log = logging.getLogger(__name__)


class Readiness:
    """Which of a process's background workers are down right now. Call it from the event loop."""

    def __init__(self) -> None:
        self._down: set[str] = set()
        self._listeners: list[Callable[[bool], None]] = []

    @property
    def ready(self) -> bool:
        return not self._down

    @property
    def down(self) -> frozenset[str]:
        return frozenset(self._down)

    def mark_down(self, worker: str) -> None:
        if worker not in self._down:
            self._down.add(worker)
            _log.warning("%s is down; health reports NOT_SERVING until it is back", worker)
            self._notify()

    def mark_up(self, worker: str) -> None:
        if worker in self._down:
            self._down.discard(worker)
            _log.info("%s is back", worker)
            self._notify()

    def forget(self, worker: str) -> None:
        """The worker is gone on purpose (stopped): it no longer counts either way."""
        if worker in self._down:
            self._down.discard(worker)
            self._notify()

    def subscribe(self, listener: Callable[[bool], None]) -> Callable[[], None]:
        """Call `listener(ready)` on every change; returns the function that unsubscribes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _notify(self) -> None:
        for listener in list(self._listeners):
            try:
                listener(self.ready)
            except Exception:  # noqa: BLE001 - a listener's failure must not take the reporting worker down
                _log.exception("readiness listener failed")


# The process's own: consumers report here and every TesseraServer in the process follows it.
READINESS = Readiness()


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
    # What start-up built (modules, clients, caches: ~80k objects before any model) lives as long as
    # the process: out of the collector's reach, a full collection no longer walks it (25-35 ms on a
    # small machine, a pause every request in flight would see), only what requests allocate.
    gc.collect()
    gc.freeze()
    try:
        await stop.wait()
    finally:
        logging.getLogger(__name__).info("shutting down")
        await service.stop()


def run_service(service: Service, log_level: str = "INFO") -> None:
    configure_logging(log_level)
    try:
        asyncio.run(run_until_signalled(service))
    finally:
        telemetry.shutdown_tracing()  # the last spans are exported, not lost with the process
