"""The shared Kafka runtime against a real broker: round trips, DLQ, crash and redelivery, supervision."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import ConfigResource, NewTopic
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace
from prometheus_client import REGISTRY
from tessera.events.v1.payload_log_pb2 import PayloadLog

from services.common import config, kafka_admin, telemetry
from services.common.db import Database
from services.common.dead_letters import ATTEMPTS_HEADER, ORIGINAL_SHA256_HEADER, TRUNCATED_HEADER
from services.common.grpc_server import TesseraServer
from services.common.kafka_consumer import ERROR_CODE_HEADER, ERROR_HEADER, ConsumerLoop, Record, RejectedRecords
from services.common.kafka_producer import EventProducer
from services.common.lifecycle import Readiness
from tests.polling import eventually

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


async def test_a_loop_from_the_newest_record_gets_every_record_sent_once_it_is_assigned(
    kafka_bootstrap, producer, unique
):
    """Followers of the registry's events start at the newest record. `wait_assigned` returning means
    their position is fixed: a record sent right after is delivered, not skipped by a start position
    the broker is asked for later."""
    topic = f"test.{unique}"
    kafka_admin.ensure_topics(kafka_bootstrap, [topic, topic + ".dlq"], partitions=4)
    await producer.send(topic, PayloadLog(request_id="before"), key="before")
    raw = Producer({"bootstrap.servers": kafka_bootstrap})
    for attempt in range(5):
        received: list[str] = []
        done = asyncio.Event()

        async def handle(batch: list[Record[PayloadLog]], received=received, done=done) -> None:
            received.extend(record.value.request_id for record in batch)
            if len(received) >= 4:
                done.set()

        loop = ConsumerLoop(
            bootstrap=kafka_bootstrap,
            group_id=f"g-{unique}-{attempt}",
            topics=[topic],
            message_type=PayloadLog,
            handler=handle,
            dlq_producer=producer,
            **{"auto.offset.reset": "latest"},
        )
        task = asyncio.create_task(loop.run())
        try:
            await loop.wait_assigned()
            sent = [f"{attempt}-{partition}" for partition in range(4)]
            for partition, request_id in enumerate(sent):
                message = PayloadLog(request_id=request_id)
                raw.produce(
                    topic,
                    message.SerializeToString(),
                    partition=partition,
                    headers=EventProducer.headers_for(message, request_id),
                )
            assert raw.flush(30) == 0
            await asyncio.wait_for(done.wait(), 30)
        finally:
            loop.stop()
            await task
        assert sorted(received) == sent


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


async def test_a_handler_that_names_its_bad_records_sends_only_them_to_the_dlq_and_runs_once(
    kafka_bootstrap, producer, fresh_topic, unique
):
    handed: list[str] = []  # every record the handler was given, in order, repeats included
    written: list[str] = []
    done = asyncio.Event()

    async def handle(batch: list[Record[PayloadLog]]) -> None:
        handed.extend(record.value.request_id for record in batch)
        bad = [(r, ValueError(f"{r.value.request_id} has no endpoint")) for r in batch if not r.value.endpoint]
        written.extend(r.value.request_id for r in batch if r.value.endpoint)
        if bad:
            raise RejectedRecords(bad)

    settled: list[bytes] = []

    async def dead_lettered(message, exc) -> None:
        settled.append(message.value())
        if len(settled) == 2:
            done.set()

    for request_id, endpoint in [
        ("good-1", "chat"),
        ("bad-1", ""),
        ("good-2", "chat"),
        ("bad-2", ""),
        ("good-3", "chat"),
    ]:
        producer.produce(fresh_topic, PayloadLog(request_id=request_id, endpoint=endpoint), key=b"k")
    await producer.flush()

    loop = ConsumerLoop(
        bootstrap=kafka_bootstrap,
        group_id=f"g-{unique}",
        topics=[fresh_topic],
        message_type=PayloadLog,
        handler=handle,
        dlq_producer=producer,
        on_dead_letter=dead_lettered,
    )
    await consume_until(loop, done)
    assert written == ["good-1", "good-2", "good-3"]
    # No record-by-record rerun: each record reached the handler exactly once.
    assert sorted(handed) == sorted(set(handed)) and len(handed) == 5

    dead = read_all(kafka_bootstrap, fresh_topic + ".dlq", expected=2, timeout=90)
    reasons = sorted(dict(m.headers())[ERROR_HEADER].decode() for m in dead)
    assert reasons == ["bad-1 has no endpoint", "bad-2 has no endpoint"]
    assert sorted(PayloadLog.FromString(m.value()).request_id for m in dead) == ["bad-1", "bad-2"]


async def test_a_consumer_killed_before_commit_redelivers_and_the_sink_keeps_one_row(
    kafka_bootstrap, pg_dsn, producer, fresh_topic, unique
):
    schema = f"sink_{unique}"
    db = await Database(pg_dsn, schema).open()
    async with db.connection() as conn:
        await conn.execute("CREATE TABLE rows (request_id text PRIMARY KEY, endpoint text)")
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

    sink = idempotent_sink(db)

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


@pytest.fixture
async def sink_db(pg_dsn, unique):
    database = await Database(pg_dsn, f"sink_{unique}").open()
    yield database
    async with database.connection() as conn:
        await conn.execute(f"DROP SCHEMA sink_{unique} CASCADE")
    await database.close()


async def test_a_record_the_database_rejects_for_its_size_goes_to_the_dlq_and_the_partition_moves_on(
    kafka_bootstrap, producer, fresh_topic, unique, sink_db
):
    """Review #3: 54000 (index row too large) is an OperationalError, once retried forever."""
    async with sink_db.connection() as conn:
        await conn.execute("CREATE TABLE logs (request_id text PRIMARY KEY, endpoint text NOT NULL)")
    done = asyncio.Event()

    async def handle(batch: list[Record[PayloadLog]]) -> None:
        async with sink_db.transaction() as conn:
            for record in batch:
                await conn.execute(
                    "INSERT INTO logs VALUES (%s, %s) ON CONFLICT DO NOTHING",
                    (record.value.request_id, record.value.endpoint),
                )
        if any(r.value.request_id == "after" for r in batch):
            done.set()

    # Random characters do not compress: the btree entry exceeds its 2704-byte maximum.
    producer.produce(fresh_topic, PayloadLog(request_id=secrets.token_urlsafe(6000), endpoint="chat"))
    producer.produce(fresh_topic, PayloadLog(request_id="after", endpoint="chat"))
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

    async with sink_db.connection() as conn:
        rows = await (await conn.execute("SELECT request_id FROM logs")).fetchall()
    assert rows == [("after",)]
    [dead] = read_all(kafka_bootstrap, fresh_topic + ".dlq", expected=1)
    headers = dict(dead.headers())
    assert headers[ERROR_CODE_HEADER] == b"ProgramLimitExceeded" and b"index row" in headers[ERROR_HEADER]
    assert headers[ATTEMPTS_HEADER] == b"1"


async def test_a_record_that_keeps_failing_transiently_is_dead_lettered_after_max_attempts(
    kafka_bootstrap, pg_dsn, producer, fresh_topic, unique, sink_db
):
    """A row locked by someone else (55P03) is transient; a record still failing after its attempts moves on."""
    async with sink_db.connection() as conn:
        await conn.execute("CREATE TABLE counters (name text PRIMARY KEY, n int NOT NULL)")
        await conn.execute("INSERT INTO counters VALUES ('locked', 0), ('free', 0)")
    done = asyncio.Event()

    async def handle(batch: list[Record[PayloadLog]]) -> None:
        async with sink_db.transaction() as conn:
            for record in batch:
                await conn.execute("SELECT n FROM counters WHERE name = %s FOR UPDATE NOWAIT", (record.value.endpoint,))
                await conn.execute("UPDATE counters SET n = n + 1 WHERE name = %s", (record.value.endpoint,))
        if any(r.value.endpoint == "free" for r in batch):
            done.set()

    locker = await Database(pg_dsn, f"sink_{unique}").open()
    try:
        async with locker.transaction() as held:
            await held.execute("SELECT n FROM counters WHERE name = 'locked' FOR UPDATE")
            producer.produce(fresh_topic, PayloadLog(request_id="r1", endpoint="locked"))
            producer.produce(fresh_topic, PayloadLog(request_id="r2", endpoint="free"))
            await producer.flush()
            loop = ConsumerLoop(
                bootstrap=kafka_bootstrap,
                group_id=f"g-{unique}",
                topics=[fresh_topic],
                message_type=PayloadLog,
                handler=handle,
                dlq_producer=producer,
                max_attempts=3,
                max_backoff_s=0.2,
            )
            await consume_until(loop, done)
    finally:
        await locker.close()

    [dead] = read_all(kafka_bootstrap, fresh_topic + ".dlq", expected=1)
    headers = dict(dead.headers())
    assert headers[ERROR_CODE_HEADER] == b"LockNotAvailable" and headers[ATTEMPTS_HEADER] == b"3"
    assert PayloadLog.FromString(dead.value()).request_id == "r1"
    async with sink_db.connection() as conn:
        counts = dict(await (await conn.execute("SELECT name, n FROM counters")).fetchall())
    assert counts == {"locked": 0, "free": 1}


async def test_a_dlq_send_that_fails_is_retried_and_nothing_unsettled_is_committed(
    kafka_bootstrap, fresh_topic, unique
):
    """Review #11: the DLQ topic is missing (and nobody may create it by writing): the loop keeps
    retrying the copy, commits nothing past the poison record, and moves on once the topic exists."""
    topic = f"{fresh_topic}.nodlq"
    kafka_admin.ensure_topics(kafka_bootstrap, [topic], partitions=1)
    group = f"g-{unique}"
    # Fails a send to a missing topic after 1.5 s instead of librdkafka's 5 minutes.
    dlq_producer = EventProducer(
        kafka_bootstrap, client_id="dlq", **{"allow.auto.create.topics": False, "message.timeout.ms": 1500}
    )
    processed: list[str] = []
    done = asyncio.Event()

    async def handle(batch: list[Record[PayloadLog]]) -> None:
        for record in batch:
            if record.value.endpoint == "reject-me":
                raise ValueError("endpoint 'reject-me' is not served")
        processed.extend(r.value.request_id for r in batch)
        done.set()

    await dlq_producer.send(topic, PayloadLog(request_id="bad", endpoint="reject-me"))
    await dlq_producer.send(topic, PayloadLog(request_id="good", endpoint="chat"))
    loop = ConsumerLoop(
        bootstrap=kafka_bootstrap,
        group_id=group,
        topics=[topic],
        message_type=PayloadLog,
        handler=handle,
        dlq_producer=dlq_producer,
        max_backoff_s=0.5,
    )
    failures = ("tessera_kafka_dlq_send_failures_total", {"topic": topic, "group": group})
    task = asyncio.create_task(loop.run())
    try:
        assert await eventually(lambda: (REGISTRY.get_sample_value(*failures) or 0) >= 2)
        assert not task.done() and processed == []
        assert committed_offset(kafka_bootstrap, group, topic) < 1  # the poison record is not settled
        kafka_admin.ensure_topics(kafka_bootstrap, [topic + ".dlq"], partitions=1)
        await asyncio.wait_for(done.wait(), 60)
    finally:
        loop.stop()
        await task
        dlq_producer.close()
    assert processed == ["good"]
    [dead] = read_all(kafka_bootstrap, topic + ".dlq", expected=1)
    assert dict(dead.headers())[ERROR_CODE_HEADER] == b"ValueError"
    assert committed_offset(kafka_bootstrap, group, topic) == 2


async def test_a_record_near_the_size_limit_still_fits_the_dlq_truncated(
    kafka_bootstrap, producer, fresh_topic, unique
):
    """Review #11: the copy plus a 4 KB reason no longer fits 16 MiB; it is truncated and says so."""
    # Compressible, so the broker takes it; librdkafka counts it raw against its 16 MiB.
    huge = PayloadLog(request_id="huge", endpoint="e" * (16 * 1024 * 1024 - 1024))
    value = huge.SerializeToString()
    processed: list[str] = []
    done = asyncio.Event()

    async def handle(batch: list[Record[PayloadLog]]) -> None:
        for record in batch:
            if record.value.request_id == "huge":
                raise ValueError("too big to think about: " + "x" * 5000)
        processed.extend(r.value.request_id for r in batch)
        done.set()

    await producer.send(fresh_topic, huge, key="huge")
    await producer.send(fresh_topic, PayloadLog(request_id="after", endpoint="chat"))
    loop = ConsumerLoop(
        bootstrap=kafka_bootstrap,
        group_id=f"g-{unique}",
        topics=[fresh_topic],
        message_type=PayloadLog,
        handler=handle,
        dlq_producer=producer,
    )
    await consume_until(loop, done)
    assert processed == ["after"]
    [dead] = read_all(kafka_bootstrap, fresh_topic + ".dlq", expected=1)
    headers = dict(dead.headers())
    assert f"of {len(value)} bytes".encode() in headers[TRUNCATED_HEADER]
    assert ORIGINAL_SHA256_HEADER in headers and 0 < len(dead.value()) < len(value)
    assert dead.key() == b"huge" and headers[ERROR_CODE_HEADER] == b"ValueError"


async def test_a_dlq_with_a_smaller_size_limit_gets_a_smaller_copy(kafka_bootstrap, producer, unique):
    """The DLQ topic accepts 1 MB records, the copy is 2 MB: the broker's refusal shrinks the copy."""
    topic = f"test.small-dlq.{unique}"
    kafka_admin.ensure_topics(kafka_bootstrap, [topic], partitions=1)
    client = kafka_admin.admin(kafka_bootstrap)
    created = client.create_topics(
        [NewTopic(topic + ".dlq", num_partitions=1, config={"max.message.bytes": "1048588"})]
    )
    created[topic + ".dlq"].result()
    value = os.urandom(2 * 1024 * 1024)  # random bytes do not compress below the limit
    done = asyncio.Event()

    async def handle(batch: list[Record[PayloadLog]]) -> None:
        if any(r.value.request_id == "after" for r in batch):
            done.set()

    await producer.send_bytes(topic, value, key=b"big", headers=[("content-type", b"application/octet-stream")])
    await producer.send(topic, PayloadLog(request_id="after", endpoint="chat"))
    loop = ConsumerLoop(
        bootstrap=kafka_bootstrap,
        group_id=f"g-{unique}",
        topics=[topic],
        message_type=PayloadLog,
        handler=handle,
        dlq_producer=producer,
        max_backoff_s=0.2,
    )
    await consume_until(loop, done)
    [dead] = read_all(kafka_bootstrap, topic + ".dlq", expected=1)
    headers = dict(dead.headers())
    assert headers[ERROR_CODE_HEADER] == b"INVALID_ARGUMENT"
    assert f"of {len(value)} bytes".encode() in headers[TRUNCATED_HEADER]
    assert value.startswith(dead.value()) and len(dead.value()) < 1024 * 1024


async def test_a_consumer_that_dies_restarts_and_health_is_not_serving_meanwhile(
    kafka_bootstrap, producer, fresh_topic, unique
):
    """A second member with the same static id fences the loop's consumer (a fatal error): the loop
    restarts with a new one, and the gRPC health check says NOT_SERVING until it has its partitions."""
    readiness = Readiness()
    settings = config.load(config.CommonSettings, service_name="sample", grpc_port=0, auth_tokens="t=alice")
    server = TesseraServer(settings, readiness=readiness)
    port = await server.start()
    group = f"g-{unique}"
    received = asyncio.Event()

    async def handle(batch: list[Record[PayloadLog]]) -> None:
        received.set()

    loop = ConsumerLoop(
        bootstrap=kafka_bootstrap,
        group_id=group,
        topics=[fresh_topic],
        message_type=PayloadLog,
        handler=handle,
        dlq_producer=producer,
        readiness=readiness,
        restart_backoff_s=(3.0, 3.0),
        **{"group.instance.id": "replica-1", "heartbeat.interval.ms": 500},
    )
    restarts = ("tessera_kafka_consumer_restarts_total", {"group": group})
    before = REGISTRY.get_sample_value(*restarts) or 0
    task = asyncio.create_task(loop.run())
    fencer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group, "group.instance.id": "replica-1"})
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)

        async def status() -> int:
            return (await health.Check(health_pb2.HealthCheckRequest(service=""))).status

        async def status_is(expected: int) -> bool:
            return await status() == expected

        try:
            await loop.wait_assigned()
            assert await status() == health_pb2.HealthCheckResponse.SERVING
            fencer.subscribe([fresh_topic])
            while not readiness.down:
                await asyncio.to_thread(fencer.consume, 1, 0.2)
            assert await eventually(lambda: status_is(health_pb2.HealthCheckResponse.NOT_SERVING))
            await asyncio.to_thread(fencer.close)
            assert await eventually(lambda: status_is(health_pb2.HealthCheckResponse.SERVING))
            await producer.send(fresh_topic, PayloadLog(request_id="after-restart", endpoint="chat"))
            await asyncio.wait_for(received.wait(), 60)
        finally:
            loop.stop()
            await task
            await server.stop(0)
    assert not task.exception() and (REGISTRY.get_sample_value(*restarts) or 0) == before + 1


def test_dead_letter_topics_keep_records_longer_and_replication_follows_the_setting(kafka_bootstrap, unique):
    name = f"test.admin.{unique}"
    created = kafka_admin.ensure_topics(kafka_bootstrap, [name, name + ".dlq"], partitions=1)
    assert sorted(created) == [name, name + ".dlq"]
    client = kafka_admin.admin(kafka_bootstrap)
    resources = [ConfigResource(ConfigResource.Type.TOPIC, t) for t in (name, name + ".dlq")]
    retention = {
        r.name: int(future.result()["retention.ms"].value) for r, future in client.describe_configs(resources).items()
    }
    assert retention[name + ".dlq"] == config.CommonSettings().kafka_dlq_retention_ms > retention[name]
    # -1 left the choice to the broker (one replica here); an explicit factor is passed through as asked.
    assert len(client.list_topics(name, timeout=10).topics[name].partitions[0].replicas) == 1
    with pytest.raises(KafkaException) as refused:
        kafka_admin.ensure_topics(kafka_bootstrap, [f"{name}.three"], partitions=1, replication_factor=3)
    assert refused.value.args[0].code() == KafkaError.INVALID_REPLICATION_FACTOR
    # min.insync.replicas per topic when set (acks=all then needs that many copies of a write).
    kafka_admin.ensure_topics(kafka_bootstrap, [f"{name}.isr"], partitions=1, min_insync_replicas=1)
    described = _topic_config(client, f"{name}.isr")["min.insync.replicas"]
    assert described.value == "1" and not described.is_default


def _topic_config(client, topic: str, attempts: int = 50) -> dict:
    """A new topic's configuration (its metadata may take a moment to reach the broker we ask)."""
    for attempt in range(attempts):
        try:
            (future,) = client.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic)]).values()
            return future.result()
        except KafkaException:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2)
    raise AssertionError("unreachable")


def committed_offset(bootstrap: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        [position] = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        return position.offset
    finally:
        consumer.close()


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
