"""The inference table under hostile or unusual payload logs: bounds, JSON records, duplicates, retention."""

from __future__ import annotations

import os
import time
import uuid

import psycopg
import pytest
from confluent_kafka import Consumer
from google.protobuf import json_format
from psycopg import sql
from tessera.monitoring.v1 import monitoring_pb2 as pb

from services.common.kafka_consumer import ERROR_HEADER
from tests.integration.monitoring.conftest import METADATA, payload_log
from tests.polling import eventually

pytestmark = pytest.mark.integration


def endpoint_name() -> str:
    return f"ep-{uuid.uuid4().hex[:8]}"


async def stored_ids(stub, endpoint: str) -> list[str]:
    request = pb.ListInferenceRecordsRequest(endpoint=endpoint)
    request.page.page_size = 100
    reply = await stub.ListInferenceRecords(request, metadata=METADATA)
    return sorted(r.request_id for r in reply.records)


def dead_letter_reasons(bootstrap: str, topic: str, expected: int) -> list[str]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic + ".dlq"])
    # A new group's first assignment and fetch can take many seconds on a loaded broker.
    reasons, deadline = [], time.monotonic() + 90
    while len(reasons) < expected and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and not message.error():
            reasons.append(dict(message.headers())[ERROR_HEADER].decode())
    # Anything more that arrives shortly after is counted too.
    extra = consumer.poll(2.0)
    if extra is not None and not extra.error():
        reasons.append(dict(extra.headers())[ERROR_HEADER].decode())
    consumer.close()
    return reasons


def query(pg_dsn: str, schema: str, statement: str, *args):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        return conn.execute(statement, args).fetchall()


async def test_a_12kb_request_id_is_dead_lettered_and_its_neighbours_are_ingested(
    monitoring, producer, kafka_bootstrap
):
    endpoint, now = endpoint_name(), time.time()
    huge = payload_log(endpoint, os.urandom(6000).hex(), now, 10.0)  # 12,000 hex characters
    producer.produce(monitoring.payload_topic, huge, key=endpoint)
    good = [payload_log(endpoint, f"{endpoint}-{i}", now + i, 10.0) for i in range(5)]
    for log in good:
        producer.produce(monitoring.payload_topic, log, key=endpoint, record_id=log.request_id)
    producer.flush_sync()

    async def five():
        return len(await stored_ids(monitoring.stub, endpoint)) == 5

    assert await eventually(five)
    assert await stored_ids(monitoring.stub, endpoint) == sorted(log.request_id for log in good)
    reasons = dead_letter_reasons(kafka_bootstrap, monitoring.payload_topic, expected=1)
    assert len(reasons) == 1 and "request_id is 12000 characters long" in reasons[0], reasons


@pytest.mark.parametrize(
    "field",
    ["endpoint", "served_model", "model_version", "source", "status", "trace_id", "principal", "error_message"],
)
def test_every_string_field_has_a_bound(field):
    from services.common.errors import InvalidArgument
    from services.monitoring.ingest import MAX_LENGTHS, LogRecord, validate

    log = payload_log("ep", "id", time.time(), 1.0)
    setattr(log, field, "x" * (MAX_LENGTHS[field] + 1))
    with pytest.raises(InvalidArgument, match=field):
        validate(LogRecord(log, b"", time.time()))
    log = payload_log("ep", "id", time.time(), 1.0)
    log.labels["k" * 200] = "v"
    with pytest.raises(InvalidArgument, match="labels"):
        validate(LogRecord(log, b"", time.time()))


@pytest.mark.parametrize("event_time", [time.time() + 86400 * 365 * 80, 1.0, float("nan")])
def test_a_timestamp_far_in_the_future_or_past_is_refused(event_time):
    from services.common.errors import InvalidArgument
    from services.monitoring.ingest import LogRecord, validate

    with pytest.raises(InvalidArgument, match="timestamp"):
        validate(LogRecord(payload_log("ep", "id", time.time(), 1.0), b"", event_time))


async def test_a_json_payload_log_is_stored_as_parsed_and_queryable_as_jsonb(monitoring, producer, pg_dsn):
    endpoint, now = endpoint_name(), time.time()
    log = payload_log(endpoint, f"{endpoint}-json", now, 25.0)
    log.labels["tenant"] = "acme"
    log.inputs.update({"prompt": "what is up?", "retrieved_context": [{"id": "doc-1", "score": 0.9}]})
    producer.produce_bytes(
        monitoring.payload_topic,
        json_format.MessageToJson(log).encode(),
        key=endpoint,
        headers=[("content-type", b"application/json")],
    )
    binary = payload_log(endpoint, f"{endpoint}-proto", now + 1, 30.0)
    producer.produce(monitoring.payload_topic, binary, key=endpoint, record_id=binary.request_id)
    producer.flush_sync()

    async def both():
        return len(await stored_ids(monitoring.stub, endpoint)) == 2

    assert await eventually(both)
    request = pb.ListInferenceRecordsRequest(endpoint=endpoint)
    reply = await monitoring.stub.ListInferenceRecords(request, metadata=METADATA)
    by_id = {r.request_id: r for r in reply.records}
    assert by_id[log.request_id].labels["tenant"] == "acme"
    assert by_id[log.request_id].inputs["prompt"] == "what is up?"
    rows = query(
        pg_dsn,
        monitoring.schema,
        "SELECT request->>'prompt', response->>'text', labels->>'tenant', retrieved_context->0->>'id'"
        " FROM inference_records WHERE request_id = %s",
        log.request_id,
    )
    assert rows == [("what is up?", "y" * 80, "acme", "doc-1")]


async def test_a_request_id_is_stored_once_the_first_record_wins(monitoring, producer, pg_dsn):
    endpoint, now = endpoint_name(), time.time()
    first = payload_log(endpoint, f"{endpoint}-same", now, 10.0)
    producer.produce(monitoring.payload_topic, first, key=endpoint, record_id=first.request_id)
    producer.flush_sync()

    async def stored():
        return await stored_ids(monitoring.stub, endpoint) == [first.request_id]

    assert await eventually(stored)
    # The same request id later, with another timestamp and latency (a replayed or forged log).
    second = payload_log(endpoint, first.request_id, now + 3600, 99.0)
    marker = payload_log(endpoint, f"{endpoint}-after", now + 1, 10.0)
    for log in (second, marker):
        producer.produce(monitoring.payload_topic, log, key=endpoint, record_id=log.request_id)
    producer.flush_sync()

    async def marker_stored():
        return marker.request_id in await stored_ids(monitoring.stub, endpoint)

    assert await eventually(marker_stored)
    rows = query(
        pg_dsn,
        monitoring.schema,
        "SELECT latency_ms FROM inference_records WHERE request_id = %s",
        first.request_id,
    )
    assert rows == [(10.0,)]


async def test_retention_drops_whole_days_older_than_the_period(monitoring, producer, pg_dsn):
    endpoint, day = endpoint_name(), 86400
    today = int(time.time()) // day * day
    old = payload_log(endpoint, f"{endpoint}-old", today - 40 * day + 60, 10.0)
    recent = payload_log(endpoint, f"{endpoint}-recent", today - 2 * day + 60, 10.0)
    for log in (old, recent):
        producer.produce(monitoring.payload_topic, log, key=endpoint, record_id=log.request_id)
    producer.flush_sync()

    async def both():
        return len(await stored_ids(monitoring.stub, endpoint)) == 2

    assert await eventually(both)
    core = monitoring.core
    core.ingestor.retention_days = 30
    try:
        dropped = await core.apply_retention()
    finally:
        core.ingestor.retention_days = 0
    old_day = time.strftime("%Y%m%d", time.gmtime(today - 40 * day))
    assert f"inference_records_{old_day}" in dropped
    assert await stored_ids(monitoring.stub, endpoint) == [recent.request_id]
    ids = query(
        pg_dsn, monitoring.schema, "SELECT request_id FROM inference_request_ids WHERE request_id = %s", old.request_id
    )
    assert ids == []
    # A straggler older than the period is not written back.
    core.ingestor.retention_days = 30
    try:
        from services.monitoring.ingest import LogRecord

        assert await core.ingest([LogRecord(old, old.SerializeToString(), old.timestamp.seconds)]) == 0
    finally:
        core.ingestor.retention_days = 0
