"""The shared outbox on real PostgreSQL and Kafka: any table, any protobuf type, each committed event once."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from confluent_kafka import Consumer
from tessera.events.v1 import drift_pb2

from services.common import kafka_admin
from services.common.db import Database
from services.common.kafka_producer import EventProducer
from services.common.outbox import Outbox, OutboxEncoding, OutboxEvent, OutboxPublisher

pytestmark = pytest.mark.integration


def _stamp(payload: bytes, event_id: str) -> bytes:
    event = drift_pb2.DriftEvent.FromString(payload)
    event.event_id = event_id
    return event.SerializeToString()


def _read(bootstrap: str, topic: str, count: int, timeout_s: float = 30.0) -> list:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    seen = []
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            seen.append(msg)
            if len(seen) >= count:
                deadline = min(deadline, time.monotonic() + 1.5)  # a duplicate would follow closely
    finally:
        consumer.close()
    return seen


async def test_a_parameterised_outbox_publishes_committed_events_once_with_their_ids(pg_dsn, kafka_bootstrap, unique):
    topic = f"test.outbox.{unique}"
    kafka_admin.ensure_topics(kafka_bootstrap, [topic], partitions=1)
    db = await Database(pg_dsn, f"t_outbox_{unique}").open()
    outbox = Outbox("drift_outbox", OutboxEncoding(drift_pb2.DriftEvent, _stamp))
    producer = EventProducer(kafka_bootstrap, client_id="test-outbox")
    try:
        async with db.transaction() as conn:
            await conn.execute(outbox.create_table_sql())
        async with db.transaction() as conn:
            await outbox.add(
                conn,
                topic,
                [
                    OutboxEvent("ep-1", drift_pb2.DriftEvent(endpoint="ep-1").SerializeToString()),
                    OutboxEvent("ep-2", drift_pb2.DriftEvent(endpoint="ep-2").SerializeToString()),
                ],
            )
        with pytest.raises(RuntimeError):
            async with db.transaction() as conn:
                await outbox.add(
                    conn, topic, [OutboxEvent("ghost", drift_pb2.DriftEvent(endpoint="x").SerializeToString())]
                )
                raise RuntimeError("rolled back")

        publisher = OutboxPublisher(db, producer, outbox, poll_s=0.1)
        rival = OutboxPublisher(db, producer, outbox, poll_s=0.1)  # a second replica: the lock keeps one at a time
        publisher.start()
        rival.start()
        messages = await asyncio.to_thread(_read, kafka_bootstrap, topic, 2)
        await publisher.stop()
        await rival.stop()

        events = [drift_pb2.DriftEvent.FromString(m.value()) for m in messages]
        assert [(m.key().decode(), e.endpoint) for m, e in zip(messages, events, strict=True)] == [
            ("ep-1", "ep-1"),
            ("ep-2", "ep-2"),
        ]
        assert all(e.event_id.startswith(f"t_outbox_{unique}:") for e in events)
        assert len({e.event_id for e in events}) == 2
        headers = dict(messages[0].headers())
        assert headers["schema"].decode().endswith("DriftEvent")
        async with db.connection() as conn:
            cur = await conn.execute("SELECT count(*) FILTER (WHERE sent_at IS NULL), count(*) FROM drift_outbox")
            assert await cur.fetchone() == (0, 2)
    finally:
        producer.close()
        async with db.connection() as conn:
            await conn.execute(f"DROP SCHEMA t_outbox_{unique} CASCADE")
        await db.close()
