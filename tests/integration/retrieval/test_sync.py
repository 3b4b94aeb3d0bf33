"""Sync through Kafka: the consumer applies records idempotently, dead-letters bad ones; the
source-table connector follows inserts, updates and deletes."""

from __future__ import annotations

import asyncio
import time
import uuid

import psycopg
import pytest
from confluent_kafka import Consumer
from psycopg import sql
from tessera.events.v1.retrieval_pb2 import RetrievalSyncRecord
from tessera.retrieval.v1 import retrieval_pb2 as pb

from services.common.kafka_consumer import ERROR_HEADER
from services.common.kafka_producer import EventProducer
from services.retrieval import metrics
from services.retrieval.connector import ConnectorSpec, SourceTableConnector
from tests.integration.retrieval.conftest import METADATA, TOKEN, field, index_name
from tests.polling import eventually

pytestmark = pytest.mark.integration

# The sender of a sync record, as gRPC metadata names a caller.
SENDER = {"authorization": f"Bearer {TOKEN}"}


async def stored(stub, name: str, dim: int) -> dict[str, tuple[int, str]]:
    reply = await stub.Query(
        pb.QueryRequest(index=name, vector=[1.0] * dim, k=100, include_text=True), metadata=METADATA
    )
    return {h.id: (h.version, h.text) for h in reply.hits}


def record(name: str, op, doc_id: str, version: int, vector=(), text: str = "") -> RetrievalSyncRecord:
    rec = RetrievalSyncRecord(index=name, op=op, document_id=doc_id, version=version, text=text, vector=list(vector))
    rec.source_timestamp.GetCurrentTime()
    return rec


@pytest.fixture(scope="module")
def producer(kafka_bootstrap):
    p = EventProducer(kafka_bootstrap, client_id="retrieval-sync-test")
    yield p
    p.close()


async def test_sync_records_apply_in_order_and_redelivery_changes_nothing(retrieval, producer):
    stub, topic = retrieval.stub, retrieval.topic
    name = index_name()
    await stub.CreateIndex(pb.CreateIndexRequest(name=name, dimension=2), metadata=METADATA)
    up, down = RetrievalSyncRecord.UPSERT, RetrievalSyncRecord.DELETE
    records = [
        record(name, up, "a", 1, [1, 0], "a v1"),
        record(name, up, "b", 1, [0, 1], "b v1"),
        record(name, up, "a", 2, [1, 1], "a v2"),
        record(name, down, "b", 2),
        record(name, up, "c", 5, [1, 2], "c v5"),
    ]
    ids = [producer.next_record_id() for _ in records]
    for rec, rid in zip(records, ids, strict=True):
        producer.produce(topic, rec, key=name, record_id=rid, headers=SENDER)
    await producer.flush()
    expected = {"a": (2, "a v2"), "c": (5, "c v5")}
    assert await eventually(lambda: _equals(stored(retrieval.stub, name, 2), expected)) == expected
    assert metrics.SYNC_LAG.labels(name)._value.get() >= 0.0

    skipped_before = metrics.SYNC_APPLIED.labels(name, "skipped")._value.get()
    # The same records again, as after a crash before the offset commit.
    for rec, rid in zip(records, ids, strict=True):
        producer.produce(topic, rec, key=name, record_id=rid, headers=SENDER)
    await producer.flush()

    async def all_skipped():
        return metrics.SYNC_APPLIED.labels(name, "skipped")._value.get() - skipped_before >= len(records)

    assert await eventually(all_skipped)
    assert await stored(stub, name, 2) == expected


async def dlq_reasons(kafka_bootstrap: str, dlq: str, labels: set[str]) -> dict[str, str]:
    """The error header of each DLQ record labelled (`tessera-test` header) with one of `labels`."""
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"dlq-reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([dlq])
    reasons: dict[str, str] = {}
    deadline = time.monotonic() + 30
    while len(reasons) < len(labels) and time.monotonic() < deadline:
        message = await asyncio.to_thread(consumer.poll, 0.5)
        if message is None or message.error():
            continue
        headers = {k: (v or b"").decode() for k, v in message.headers() or []}
        if headers.get("tessera-test") in labels:
            reasons[headers["tessera-test"]] = headers[ERROR_HEADER]
    consumer.close()
    return reasons


async def _equals(coro, expected):
    got = await coro
    return got if got == expected else None


async def test_malformed_sync_records_go_to_the_dlq_and_good_ones_still_apply(retrieval, producer, kafka_bootstrap):
    stub, topic = retrieval.stub, retrieval.topic
    name = index_name()
    await stub.CreateIndex(pb.CreateIndexRequest(name=name, dimension=2), metadata=METADATA)
    up = RetrievalSyncRecord.UPSERT
    bad = {
        "garbage": None,
        "unknown-index": record("tests.nowhere.none", up, "x", 1, [1, 0]),
        "wrong-dimension": record(name, up, "x", 1, [1, 0, 0]),
        "no-id": record(name, up, "", 1, [1, 0]),
    }
    for label, rec in bad.items():
        if rec is None:
            producer.produce_bytes(topic, b"\xff\x00not protobuf", key=name, headers=[("tessera-test", label.encode())])
        else:
            producer.produce(topic, rec, key=name, headers={**SENDER, "tessera-test": label})
    producer.produce(topic, record(name, up, "good", 1, [1, 1], "good"), key=name, headers=SENDER)
    await producer.flush()
    assert await eventually(lambda: _equals(stored(stub, name, 2), {"good": (1, "good")})) == {"good": (1, "good")}

    reasons = await dlq_reasons(kafka_bootstrap, topic + ".dlq", set(bad))
    assert set(reasons) == set(bad)
    assert "protobuf" in reasons["garbage"]
    assert "does not exist" in reasons["unknown-index"]
    assert "dimensions" in reasons["wrong-dimension"]
    assert "document_id" in reasons["no-id"]


async def test_the_connector_follows_inserts_updates_and_deletes_of_a_source_table(retrieval, pg_dsn):
    stub = retrieval.stub
    name = index_name()
    await stub.CreateIndex(
        pb.CreateIndexRequest(
            name=name,
            embedding=pb.EmbeddingSource(model="all-MiniLM-L6-v2", text_columns=["title"]),
            metadata_schema=[field("title", pb.STRING), field("category", pb.INT64)],
        ),
        metadata=METADATA,
    )
    source_schema = f"src_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(source_schema)))
        conn.execute(
            sql.SQL(
                "CREATE TABLE {}.articles (id bigint PRIMARY KEY, title text NOT NULL, category bigint,"
                " updated_at timestamptz NOT NULL DEFAULT clock_timestamp())"
            ).format(sql.Identifier(source_schema))
        )
    spec = ConnectorSpec(
        name=f"articles-{uuid.uuid4().hex[:6]}",
        index=name,
        source_dsn=pg_dsn,
        table=f"{source_schema}.articles",
        metadata_columns=("title", "category"),
        settle_s=0.0,
    )
    connector = SourceTableConnector(spec, retrieval.core.store, retrieval.producer, retrieval.topic, TOKEN)
    await connector.install_delete_capture()
    table = sql.Identifier(source_schema, "articles")
    try:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            for i, title in enumerate(["Sourdough bread at home", "Fixing a bicycle chain", "Growing tomatoes"], 1):
                conn.execute(
                    sql.SQL("INSERT INTO {} (id, title, category) VALUES (%s, %s, %s)").format(table), (i, title, i)
                )
        assert await connector.sync_once() == (3, 0)
        assert await eventually(lambda: _titles(stub, name, {"1", "2", "3"}))

        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("UPDATE {} SET title = %s, updated_at = clock_timestamp() WHERE id = 2").format(table),
                ("Fixing a flat bicycle tyre",),
            )
            conn.execute(sql.SQL("DELETE FROM {} WHERE id = 3").format(table))
            conn.execute(sql.SQL("INSERT INTO {} (id, title, category) VALUES (4, 'Brewing coffee', 4)").format(table))
        assert await connector.sync_once() == (2, 1)
        titles = await eventually(
            lambda: _titles(stub, name, {"1", "2", "4"}, want={"2": "Fixing a flat bicycle tyre"})
        )
        assert titles == {"1": "Sourdough bread at home", "2": "Fixing a flat bicycle tyre", "4": "Brewing coffee"}
        # Nothing new: nothing published, and a restart resumes from the stored watermark.
        assert await connector.sync_once() == (0, 0)
        assert metrics.SYNC_LAG.labels(name)._value.get() > 0.0
        reply = await stub.Query(pb.QueryRequest(index=name, text="repairing a bike", k=1), metadata=METADATA)
        assert reply.hits[0].id == "2"
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(source_schema)))


async def _titles(stub, name: str, ids: set[str], want: dict[str, str] | None = None):
    reply = await stub.Query(pb.QueryRequest(index=name, text="anything", k=50, columns=["title"]), metadata=METADATA)
    titles = {h.id: h.metadata["title"] for h in reply.hits}
    if set(titles) != ids or any(titles.get(k) != v for k, v in (want or {}).items()):
        return None
    return titles


async def test_sync_records_without_a_known_sender_go_to_the_dlq_and_change_nothing(
    retrieval, producer, kafka_bootstrap
):
    stub, topic = retrieval.stub, retrieval.topic
    name = index_name()
    await stub.CreateIndex(pb.CreateIndexRequest(name=name, dimension=2), metadata=METADATA)
    up = RetrievalSyncRecord.UPSERT
    unsigned = {
        "no-header": {},
        "unknown-token": {"authorization": "Bearer not-a-known-token"},
        "not-bearer": {"authorization": TOKEN},
    }
    for label, headers in unsigned.items():
        producer.produce(
            topic, record(name, up, label, 1, [1, 0]), key=name, headers={**headers, "tessera-test": label}
        )
    producer.produce(topic, record(name, up, "signed", 1, [1, 1], "signed"), key=name, headers=SENDER)
    await producer.flush()
    expected = {"signed": (1, "signed")}
    assert await eventually(lambda: _equals(stored(stub, name, 2), expected)) == expected

    reasons = await dlq_reasons(kafka_bootstrap, topic + ".dlq", set(unsigned))
    assert set(reasons) == set(unsigned)
    assert "missing bearer token" in reasons["no-header"]
    assert "invalid bearer token" in reasons["unknown-token"]
    assert "Bearer" in reasons["not-bearer"]
