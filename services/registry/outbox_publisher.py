"""Publishes the outbox to Kafka: every committed event exactly once, in commit order.

Events are written in the transaction of the change (store/outbox.py), so a
rolled-back change leaves none. The publisher claims unsent rows under an
advisory lock (one publisher at a time across replicas keeps per-key order),
waits for Kafka's acknowledgement, then marks them sent in the same
transaction. The producer is idempotent; consumers dedupe on `event_id`
should a crash fall between the acknowledgement and the commit.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib

from prometheus_client import Counter
from tessera.events.v1 import registry_pb2 as pb

from services.common.db import Database
from services.common.kafka_producer import EventProducer
from services.registry.store import outbox

_log = logging.getLogger(__name__)

PUBLISHED = Counter("tessera_registry_events_published_total", "Registry events acknowledged by Kafka")

BATCH = 500


class OutboxPublisher:
    def __init__(self, db: Database, producer: EventProducer, poll_s: float = 0.5, retention_h: float = 168.0) -> None:
        self._db = db
        self._producer = producer
        self._poll_s = poll_s
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task | None = None
        self._lock_key = zlib.crc32(f"tessera-outbox:{db.schema}".encode())
        self._retention_h = retention_h
        self._next_prune = 0.0

    def notify(self) -> None:
        """A change with events just committed: publish now rather than at the next poll."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="registry-outbox")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while True:
            try:
                while await self.publish_pending():
                    pass
                await self._prune()
            except Exception:  # noqa: BLE001 - Kafka or PostgreSQL away: retry at the next tick
                _log.exception("outbox publish failed; retrying")
            if self._stopping:
                return
            try:
                await asyncio.wait_for(self._wake.wait(), self._poll_s)
            except TimeoutError:
                pass
            self._wake.clear()

    async def _prune(self) -> None:
        """Sent rows are only history: drop them past the retention, at most once a minute."""
        now = time.monotonic()
        if now < self._next_prune:
            return
        self._next_prune = now + 60
        async with self._db.transaction() as conn:
            await outbox.prune_sent(conn, self._retention_h)

    async def publish_pending(self) -> int:
        """Publish one batch; returns how many were sent (0: nothing to do or another replica is on it)."""
        async with self._db.transaction() as conn:
            rows = await outbox.claim_unsent(conn, self._lock_key, BATCH)
            if not rows:
                return 0
            for row_id, topic, key, payload in rows:
                self._producer.produce_bytes(
                    topic,
                    _with_event_id(payload, f"{self._db.schema}:{row_id}"),
                    key=key,
                    headers=self._producer.headers_for(pb.RegistryEvent(), f"{self._db.schema}:{row_id}"),
                )
            await self._producer.flush()
            await outbox.mark_sent(conn, [row[0] for row in rows])
        PUBLISHED.inc(len(rows))
        return len(rows)


def _with_event_id(payload: bytes, event_id: str) -> bytes:
    # The id is the outbox row's, known only after the insert: stamp it on the way out.
    event = pb.RegistryEvent.FromString(payload)
    event.event_id = event_id
    return event.SerializeToString()
