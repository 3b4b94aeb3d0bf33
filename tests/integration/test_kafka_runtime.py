"""The shared Kafka runtime against a real broker: round trips, DLQ, crash and redelivery."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import Consumer
from opentelemetry import trace
from tessera.events.v1.payload_log_pb2 import PayloadLog

from services.common import telemetry
from services.common.db import Database, migrate
from services.common.kafka_consumer import ERROR_CODE_HEADER, ERROR_HEADER, ConsumerLoop, Record
from services.common.kafka_producer import EventProducer

pytestmark = pytest.mark.integration

CRASHING_CONSUMER = Path(__file__).with_name("crashing_consumer.py")


@pytest.fixture
def producer(kafka_bootstrap):
    producer = EventProducer(kafka_bootstrap, client_id="test")
    yield producer
    producer.close()


async def consume_until(loop: ConsumerLoop, done: asyncio.Event, timeout: float = 60.0) -> None:
    task = asyncio.create_task(loop.run())
    try:
        await asyncio.wait_for(done.wait(), timeout)
    finally:
        loop.stop()
        await task


async def test_a_protobuf_event_and_its_trace_context_round_trip(kafka_bootstrap, producer, fresh_topic, unique):
    telemetry.setup_tracing("test")
    received: list[Record[PayloadLog]] = []
    done = asyncio.Event()

    async def handle(batch: list[Record[PayloadLog]]) -> None:
        received.extend(batch)
        done.set()

    with trace.get_tracer("test").start_as_current_span("produce") as span:
        sent_trace_id = format(span.get_span_context().trace_id, "032x")
        await producer.send(
            fresh_topic, PayloadLog(request_id="r-1", endpoint="chat", latency_ms=3.5), key="chat", record_id="r-1"
        )

    loop = ConsumerLoop(
        bootstrap=kafka_bootstrap,
        group_id=f"g-{unique}",
        topics=[fresh_topic],
        message_type=PayloadLog,
        handler=handle,
        dlq_producer=producer,
    )
    await consume_until(loop, done)

    [record] = received
    assert record.value == PayloadLog(request_id="r-1", endpoint="chat", latency_ms=3.5)
    assert record.key == "chat" and record.record_id == "r-1"
    assert record.headers["content-type"] == "application/x-protobuf"
    assert record.headers["schema"] == "tessera.events.v1.PayloadLog"
    assert sent_trace_id in record.headers["traceparent"]
    assert format(trace.get_current_span(record.context).get_span_context().trace_id, "032x") == sent_trace_id


async def test_a_poison_record_goes_to_the_dlq_and_the_next_one_is_processed(
    kafka_bootstrap, producer, fresh_topic, unique
):
    processed: list[str] = []
    done = asyncio.Event()

    async def handle(batch: list[Record[PayloadLog]]) -> None:
        # All or nothing, like a sink writing the batch in one transaction.
        for record in batch:
            if record.value.endpoint == "reject-me":
                raise ValueError("endpoint 'reject-me' is not served")
        processed.extend(record.value.request_id for record in batch)
        if "good-2" in processed:
            done.set()

    producer.produce_bytes(fresh_topic, b"\x0f\xff not protobuf", key=b"k")
    producer.produce(fresh_topic, PayloadLog(request_id="good-1", endpoint="chat"))
    producer.produce(fresh_topic, PayloadLog(request_id="bad", endpoint="reject-me"))
    producer.produce(fresh_topic, PayloadLog(request_id="good-2", endpoint="chat"))
    await producer.flush()

    loop = ConsumerLoop(
        bootstrap=kafka_bootstrap,
        group_id=f"g-{unique}",
        topics=[fresh_topic],
        message_type=PayloadLog,
        handler=handle,
        dlq_producer=producer,
    )
    await consume_until(loop, done)
    assert processed == ["good-1", "good-2"]

    dead = read_all(kafka_bootstrap, fresh_topic + ".dlq", expected=2)
    reasons = sorted(dict(m.headers())[ERROR_CODE_HEADER].decode() for m in dead)
    assert reasons == ["INVALID_ARGUMENT", "ValueError"]
    by_code = {dict(m.headers())[ERROR_CODE_HEADER].decode(): m for m in dead}
    assert b"invalid protobuf" in dict(by_code["INVALID_ARGUMENT"].headers())[ERROR_HEADER]
    assert by_code["INVALID_ARGUMENT"].value() == b"\x0f\xff not protobuf"
    assert b"reject-me" in dict(by_code["ValueError"].headers())[ERROR_HEADER]


async def test_a_consumer_killed_before_commit_redelivers_and_the_sink_keeps_one_row(
    kafka_bootstrap, pg_dsn, producer, fresh_topic, unique
):
    schema = f"sink_{unique}"
    db = await Database(pg_dsn, schema).open()
    await migrate(db, Path("/nonexistent"))  # creates processed_records only
    async with db.connection() as conn:
        await conn.execute("CREATE TABLE rows (request_id text, endpoint text)")
    group = f"g-{unique}"
    await producer.send(fresh_topic, PayloadLog(request_id="once", endpoint="chat"), record_id="once")

    # The child process writes the row, then dies before it can commit the offset.
    child = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(CRASHING_CONSUMER), kafka_bootstrap, pg_dsn, schema, group, fresh_topic],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert child.returncode == 17, child.stdout + child.stderr
    assert "wrote once" in child.stdout

    # A healthy consumer in the same group gets the record again...
    redelivered = asyncio.Event()
    from tests.integration.crashing_consumer import idempotent_sink

    sink = idempotent_sink(db, schema)

    async def handle(batch: list[Record[PayloadLog]]) -> None:
        await sink(batch)
        redelivered.set()

    loop = ConsumerLoop(
        bootstrap=kafka_bootstrap,
        group_id=group,
        topics=[fresh_topic],
        message_type=PayloadLog,
        handler=handle,
        dlq_producer=producer,
    )
    await consume_until(loop, redelivered)
    # ...and the idempotent sink still holds exactly one row.
    async with db.connection() as conn:
        rows = await (await conn.execute("SELECT request_id FROM rows")).fetchall()
    assert rows == [("once",)]
    async with db.connection() as conn:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
    await db.close()


def read_all(bootstrap: str, topic: str, expected: int, timeout: float = 30.0):
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{os.urandom(4).hex()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    found = []
    loop = asyncio.get_event_loop()
    deadline = loop.time() + timeout
    while len(found) < expected and loop.time() < deadline:
        found += [m for m in consumer.consume(expected, 1.0) if not m.error()]
    consumer.close()
    return found
