"""Read a test topic in the background and index its records by a key, for assertions."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import defaultdict
from collections.abc import Callable

from confluent_kafka import Consumer


class TopicReader:
    def __init__(self, bootstrap: str, topic: str, parse: Callable[[bytes], object], key_of: Callable[[object], str]):
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"test-reader-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        self._consumer.subscribe([topic])
        self._parse = parse
        self._key_of = key_of
        self.by_key: dict[str, list] = defaultdict(list)
        self.raw: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._consumer.poll(0.1)
            if message is None or message.error():
                continue
            self.raw.append(message)
            try:
                value = self._parse(message.value())
            except Exception:  # noqa: BLE001 - keep garbage visible in .raw only
                continue
            self.by_key[self._key_of(value)].append(value)
        self._consumer.close()

    async def wait_for(self, keys: list[str], timeout: float = 60.0) -> dict[str, list]:
        async with asyncio.timeout(timeout):
            while any(not self.by_key.get(k) for k in keys):  # noqa: ASYNC110 - a consumer thread fills it
                await asyncio.sleep(0.05)
        return {k: list(self.by_key[k]) for k in keys}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


async def until(condition: Callable[[], bool], interval_s: float = 0.05) -> None:
    """Wait until `condition()` holds (callers bound the wait with asyncio.timeout)."""
    while not condition():  # noqa: ASYNC110 - conditions on plain lists filled by other tasks
        await asyncio.sleep(interval_s)
