"""A transactional outbox: events written in the transaction of the change they announce, published to Kafka.

A service that must never lose (nor invent) an event about a change writes the
event into an outbox table in the change's own transaction, so a rolled-back
change leaves none and a committed one is never lost. One publisher at a time
(a PostgreSQL advisory lock, across replicas, keeps per-key order) claims the
oldest unsent rows, produces them, waits for Kafka's acknowledgement and only
then marks them sent, in the claim's transaction. Should a crash fall between
the acknowledgement and the commit, rows go out again: consumers dedupe on the
event id, `<schema>:<row id>`.

Use:

    outbox = Outbox("outbox", encoding=OutboxEncoding(RegistryEvent, stamp_event_id))
    # in a migration:        outbox.create_table_sql()
    # in the change's transaction:
    await outbox.add(conn, topic, [OutboxEvent(key, payload_bytes)])
    # once per process:
    publisher = OutboxPublisher(db, producer, outbox, poll_s=0.5, retention_h=168)
    publisher.start(); ...; publisher.notify()  # after a commit with events; await publisher.stop()

The table lives in the service's schema (`Database.schema`): `id bigserial,
topic, key, payload bytea, created_at, sent_at`. Sent rows are kept
`retention_h` hours for audit, then pruned.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from google.protobuf.message import Message as ProtoMessage
from prometheus_client import Counter
from psycopg import AsyncConnection, sql

from services.common import telemetry
from services.common.db import Database
from services.common.kafka_producer import EventProducer

_log = logging.getLogger(__name__)

PUBLISHED = Counter("tessera_outbox_events_published_total", "Outbox events acknowledged by Kafka", ["outbox"])

_TABLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


@dataclass(frozen=True)
class OutboxEvent:
    """One event to write: its Kafka key keeps the events of one entity in order."""

    key: str
    payload: bytes
    # W3C traceparent of the change (empty: the trace current when the event is added).
    traceparent: str = ""


@dataclass(frozen=True)
class OutboxEncoding:
    """How a stored payload goes out: its protobuf type (for the `schema` header) and a hook that
    writes the event id (known only once the row exists) into the payload."""

    message_type: type[ProtoMessage]
    stamp_event_id: Callable[[bytes, str], bytes] = lambda payload, _event_id: payload


@dataclass(frozen=True)
class ClaimedEvent:
    row_id: int
    topic: str
    key: str
    payload: bytes
    traceparent: str = ""


class Outbox:
    """The outbox table's statements, for one table in the service's schema."""

    def __init__(self, table: str = "outbox", encoding: OutboxEncoding | None = None) -> None:
        if not _TABLE_NAME.fullmatch(table):
            raise ValueError(f"invalid outbox table name {table!r}")
        self.table = table
        self.encoding = encoding
        self._t = sql.Identifier(table)

    def create_table_sql(self) -> str:
        """DDL for a migration (the registry's 0001 migration created the same table as `outbox`)."""
        return (
            f"CREATE TABLE IF NOT EXISTS {self.table} (id bigserial PRIMARY KEY, topic text NOT NULL,"
            " key text NOT NULL, payload bytea NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),"
            f" sent_at timestamptz, traceparent text);\nCREATE INDEX IF NOT EXISTS {self.table}_unsent ON {self.table} (id)"
            " WHERE sent_at IS NULL;\n"
        )

    async def add(self, conn: AsyncConnection, topic: str, events: Sequence[OutboxEvent]) -> None:
        """Call inside the change's own transaction: the events commit or roll back with it."""
        if not events:
            return
        current = telemetry.current_traceparent()
        async with conn.cursor() as cur:
            await cur.executemany(
                sql.SQL("INSERT INTO {} (topic, key, payload, traceparent) VALUES (%s, %s, %s, %s)").format(self._t),
                [(topic, e.key, e.payload, e.traceparent or current or None) for e in events],
            )

    async def claim_unsent(self, conn: AsyncConnection, lock_key: int, limit: int) -> list[ClaimedEvent] | None:
        """The oldest unsent events, or None when another publisher holds the lock (one at a time keeps order)."""
        cur = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (lock_key,))
        if not (await cur.fetchone())[0]:
            return None
        cur = await conn.execute(
            sql.SQL(
                "SELECT id, topic, key, payload, traceparent FROM {} WHERE sent_at IS NULL ORDER BY id LIMIT %s"
            ).format(self._t),
            (limit,),
        )
        return [ClaimedEvent(row[0], row[1], row[2], bytes(row[3]), row[4] or "") for row in await cur.fetchall()]

    async def mark_sent(self, conn: AsyncConnection, row_ids: list[int]) -> None:
        await conn.execute(sql.SQL("UPDATE {} SET sent_at = now() WHERE id = ANY(%s)").format(self._t), (row_ids,))

    async def prune_sent(self, conn: AsyncConnection, retention_h: float) -> None:
        await conn.execute(
            sql.SQL("DELETE FROM {} WHERE sent_at IS NOT NULL AND sent_at < now() - make_interval(secs => %s)").format(
                self._t
            ),
            (retention_h * 3600,),
        )


class OutboxPublisher:
    """Publishes one outbox to Kafka: every committed event once, in commit order (see the module docstring)."""

    BATCH = 500

    def __init__(
        self,
        db: Database,
        producer: EventProducer,
        outbox: Outbox,
        poll_s: float = 0.5,
        retention_h: float = 168.0,
    ) -> None:
        if outbox.encoding is None:
            raise ValueError("an outbox that is published needs an encoding")
        self._db = db
        self._producer = producer
        self._outbox = outbox
        self._encoding = outbox.encoding
        self._poll_s = poll_s
        self._retention_h = retention_h
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task | None = None
        # The registry's original lock key for its `outbox` table, so old and new replicas exclude each other.
        suffix = "" if outbox.table == "outbox" else f":{outbox.table}"
        self._lock_key = zlib.crc32(f"tessera-outbox:{db.schema}{suffix}".encode())
        self._next_prune = 0.0
        self._label = f"{db.schema}.{outbox.table}"

    def notify(self) -> None:
        """A change with events just committed: publish now rather than at the next poll."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"outbox-{self._label}")

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
                _log.exception("outbox %s: publish failed; retrying", self._label)
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
            await self._outbox.prune_sent(conn, self._retention_h)

    async def publish_pending(self) -> int:
        """Publish one batch; returns how many were sent (0: nothing to do or another replica is on it)."""
        async with self._db.transaction() as conn:
            claimed = await self._outbox.claim_unsent(conn, self._lock_key, self.BATCH)
            if not claimed:
                return 0
            template = self._encoding.message_type()
            for event in claimed:
                event_id = f"{self._db.schema}:{event.row_id}"
                self._producer.produce_bytes(
                    event.topic,
                    self._encoding.stamp_event_id(event.payload, event_id),
                    key=event.key,
                    # The record continues the trace of the change it announces.
                    headers=self._producer.headers_for(
                        template, event_id, trace_context=telemetry.context_from_traceparent(event.traceparent)
                    ),
                )
            await self._producer.flush()
            await self._outbox.mark_sent(conn, [event.row_id for event in claimed])
        PUBLISHED.labels(self._label).inc(len(claimed))
        return len(claimed)
