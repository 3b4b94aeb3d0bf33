"""Two retrieval processes on one PostgreSQL schema, one sync topic and one consumer group.

An index made through one replica is queried through the other with equal
results; the sync topic's partitions are split between the two group members
and every record is applied once; a replica SIGKILLed mid-stream leaves its
partitions to the survivor, which skips what the victim had already applied
(versioned upserts) and keeps answering queries.

Who applied what is read from PostgreSQL itself: a trigger on each index table
(installed by the test) logs every row the sync path inserts or updates, with
the `application_name` of the session that wrote it (each replica names its
sessions, see `Mesh.retrieval_replica`).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
import zlib
from collections import Counter
from pathlib import Path

import grpc
import psycopg
import pytest
import pytest_asyncio
from psycopg import sql
from tessera.events.v1.retrieval_pb2 import RetrievalSyncRecord
from tessera.retrieval.v1 import retrieval_pb2 as pb
from tessera.retrieval.v1 import retrieval_pb2_grpc

from services.common.auth import bearer
from services.common.kafka_producer import EventProducer
from services.fixtures.mesh_processes import ADMIN_TOKEN, Mesh, ServiceProcess, group_assignment, start_mesh
from services.fixtures.registry_client import RegistryClient
from tests.polling import eventually

pytestmark = pytest.mark.integration

PARTITIONS = 4
ADMIN = bearer(ADMIN_TOKEN)
# A sync record names its sender as a gRPC call does.
SENDER = {"authorization": f"Bearer {ADMIN_TOKEN}"}
DIM = 4
# A loaded broker can take long to hand a new idempotent producer its id: flushes wait generously.
FLUSH_S = 120.0


@pytest_asyncio.fixture(scope="module")
async def mesh(kafka_bootstrap: str, pg_dsn: str, request: pytest.FixtureRequest):
    mesh = await start_mesh(
        kafka_bootstrap,
        pg_dsn,
        Path(tempfile.mkdtemp(prefix="tessera-retrieval-replicas-")),
        serving=0,
        monitoring=0,
        retrieval=2,
        partitions=PARTITIONS,
    )
    try:
        client = RegistryClient(mesh.registry.address, ADMIN_TOKEN)
        try:
            await client.ensure_schema("rr", "docs")
        finally:
            await client.channel.close()
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL(
                    "CREATE TABLE {s}.applied_log (index_name text, id text, version bigint, writer text);"
                    " CREATE FUNCTION {s}.log_applied() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                    " INSERT INTO {s}.applied_log VALUES (TG_ARGV[0], NEW.id, NEW.version,"
                    " current_setting('application_name')); RETURN NULL; END $$"
                ).format(s=sql.Identifier(mesh.schemas["retrieval"]))
            )
        yield mesh
    finally:
        mesh.stop()
    if not request.session.testsfailed:  # after a failure the service logs stay for reading
        shutil.rmtree(mesh.work, ignore_errors=True)


@pytest.fixture(scope="module")
def producer(mesh: Mesh):
    p = EventProducer(mesh.kafka_bootstrap, client_id="retrieval-replicas-test")
    yield p
    p.close()


def _stub(process: ServiceProcess) -> tuple[grpc.aio.Channel, retrieval_pb2_grpc.RetrievalServiceStub]:
    channel = grpc.aio.insecure_channel(process.address)
    return channel, retrieval_pb2_grpc.RetrievalServiceStub(channel)


def _vector(i: int, version: int = 1) -> list[float]:
    return [float(i % 7) + 1, float(i % 5), float(version), float(i % 3) + 0.5]


async def _query(stub, index: str, vector: list[float], k: int = 10) -> list[tuple[str, int, float]]:
    reply = await stub.Query(pb.QueryRequest(index=index, vector=vector, k=k, include_text=True), metadata=ADMIN)
    return [(h.id, h.version, round(h.score, 6)) for h in reply.hits]


async def test_an_index_made_through_one_replica_is_queried_through_the_other(mesh: Mesh):
    (a_channel, a), (b_channel, b) = (_stub(p) for p in mesh.retrieval)
    index = f"rr.docs.shared_{uuid.uuid4().hex[:6]}"
    try:
        await a.CreateIndex(pb.CreateIndexRequest(name=index, dimension=DIM), metadata=ADMIN)
        docs = [pb.Document(id=f"d{i}", version=1, vector=_vector(i), text=f"doc {i}") for i in range(50)]
        await a.UpsertDocuments(pb.UpsertDocumentsRequest(index=index, documents=docs), metadata=ADMIN)
        described = await b.DescribeIndex(pb.DescribeIndexRequest(name=index), metadata=ADMIN)
        assert described.name == index and described.dimension == DIM
        for i in range(0, 50, 7):
            on_a, on_b = await _query(a, index, _vector(i)), await _query(b, index, _vector(i))
            assert on_a == on_b and len(on_b) == 10
        # And writes through B are read through A.
        await b.UpsertDocuments(
            pb.UpsertDocumentsRequest(index=index, documents=[pb.Document(id="d3", version=2, vector=[9, 9, 9, 9])]),
            metadata=ADMIN,
        )
        assert (await _query(a, index, [9, 9, 9, 9], k=1))[0][:2] == ("d3", 2)
    finally:
        await a_channel.close()
        await b_channel.close()


async def test_an_index_deleted_through_one_replica_is_gone_on_the_other_which_keeps_answering(mesh: Mesh):
    (a_channel, a), (b_channel, b) = (_stub(p) for p in mesh.retrieval)
    doomed, kept = (f"rr.docs.{name}_{uuid.uuid4().hex[:6]}" for name in ("doomed", "kept"))
    try:
        for index in (doomed, kept):
            await a.CreateIndex(pb.CreateIndexRequest(name=index, dimension=DIM), metadata=ADMIN)
            docs = [pb.Document(id=f"d{i}", version=1, vector=_vector(i)) for i in range(20)]
            await a.UpsertDocuments(pb.UpsertDocumentsRequest(index=index, documents=docs), metadata=ADMIN)
        # A has the index described and its statement prepared on its connections; B drops the table.
        before = await _query(a, doomed, _vector(1))
        assert len(before) == 10
        await b.DeleteIndex(pb.DeleteIndexRequest(name=doomed), metadata=ADMIN)
        for _ in range(3):  # the failed statement must not leave A's connections unusable
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _query(a, doomed, _vector(1))
            assert refused.value.code() == grpc.StatusCode.NOT_FOUND
            assert await _query(a, kept, _vector(2)) == await _query(b, kept, _vector(2))
    finally:
        await a_channel.close()
        await b_channel.close()


async def test_sync_records_are_split_between_the_replicas_and_each_applied_once(mesh: Mesh, producer):
    await _wait_split(mesh, members=2)
    indexes = await _indexes(mesh, "split", 8)
    records = _stream(indexes, docs=10, versions=3)
    for rec in records:
        producer.produce(mesh.topics["sync"], rec, key=rec.index, record_id=producer.next_record_id(), headers=SENDER)
    await producer.flush(timeout=FLUSH_S)
    log = await _applied_when_complete(mesh, indexes, docs=10, versions=3)
    assert set(log.values()) == {1}, {k: n for k, n in log.items() if n != 1}
    assert len(log) == len(records)
    writers = _writers(mesh, indexes)
    # Both members of the group applied records: the partitions were shared, not idle on one side.
    assert set(writers) == {"tessera-retrieval-0", "tessera-retrieval-1"}, writers
    assert sum(writers.values()) == len(records)
    assert _dlq_count(mesh) == 0


async def test_a_replica_killed_mid_stream_leaves_every_record_applied_once_and_queries_answered(mesh: Mesh, producer):
    await _wait_split(mesh, members=2)
    indexes = await _indexes(mesh, "kill", 8)
    versions, docs = 4, 25
    records = _stream(indexes, docs=docs, versions=versions)
    victim, survivor = mesh.retrieval[1], mesh.retrieval[0]
    for i, rec in enumerate(records):
        producer.produce(mesh.topics["sync"], rec, key=rec.index, record_id=producer.next_record_id(), headers=SENDER)
        if i % 50 == 49:
            await producer.flush(timeout=FLUSH_S)
            await asyncio.sleep(0.02)
        if i == len(records) // 3:
            await producer.flush(timeout=FLUSH_S)
            # Once the victim has written some of its share: it dies holding applied, uncommitted records.
            assert await eventually(lambda: _writers(mesh, indexes).get("tessera-retrieval-1", 0) > 0, timeout=60)
            victim.kill()
    await producer.flush(timeout=FLUSH_S)
    log = await _applied_when_complete(mesh, indexes, docs=docs, versions=versions)
    # Every record applied, none twice: the survivor re-read what the victim had not committed and skipped
    # the versions already stored.
    assert len(log) == len(records)
    assert set(log.values()) == {1}, {k: n for k, n in log.items() if n != 1}
    assert not victim.alive() and survivor.alive()
    assert await eventually(lambda: _split(mesh) and len(_split(mesh)) == 1, timeout=60)
    channel, stub = _stub(survivor)
    try:
        for index in indexes:
            hits = await _query(stub, index, _vector(0, versions), k=docs)
            assert sorted(h[0] for h in hits) == sorted(f"d{i}" for i in range(docs))
            assert {h[1] for h in hits} == {versions}
    finally:
        await channel.close()
    assert _dlq_count(mesh) == 0


# -- helpers -----------------------------------------------------------------------------------------


def _split(mesh: Mesh) -> dict[str, set[int]] | None:
    members = {
        member: {p for t, p in partitions if t == mesh.topics["sync"]}
        for member, partitions in group_assignment(mesh.kafka_bootstrap, mesh.groups["retrieval"]).items()
    }
    owned = sorted(p for ps in members.values() for p in ps)
    return members if owned == list(range(PARTITIONS)) else None


async def _wait_split(mesh: Mesh, members: int) -> None:
    def shared():
        split = _split(mesh)
        return split if split and len(split) == members and all(split.values()) else None

    assert await eventually(shared, timeout=90), f"the sync partitions were never split across {members} members"


async def _indexes(mesh: Mesh, prefix: str, count: int) -> list[str]:
    """`count` new indexes whose names (the records' keys) land on every partition, with the log trigger."""
    tag = uuid.uuid4().hex[:6]
    names, per_partition = [], Counter()
    i = 0
    # librdkafka's default partitioner is CRC32 of the key: pick names so each partition gets some.
    while len(names) < count:
        name = f"rr.docs.{prefix}_{tag}_{i}"
        i += 1
        partition = zlib.crc32(name.encode()) % PARTITIONS
        if per_partition[partition] < -(-count // PARTITIONS):
            per_partition[partition] += 1
            names.append(name)
    channel, stub = _stub(mesh.retrieval[0])
    try:
        for name in names:
            await stub.CreateIndex(pb.CreateIndexRequest(name=name, dimension=DIM), metadata=ADMIN)
    finally:
        await channel.close()
    schema = sql.Identifier(mesh.schemas["retrieval"])
    with psycopg.connect(mesh.pg_dsn, autocommit=True) as conn:
        tables = dict(
            conn.execute(
                sql.SQL("SELECT name, table_name FROM {}.indexes WHERE name = ANY(%s)").format(schema), (names,)
            ).fetchall()
        )
        for name in names:
            conn.execute(
                sql.SQL(
                    "CREATE TRIGGER log_applied AFTER INSERT OR UPDATE ON {s}.{t}"
                    " FOR EACH ROW EXECUTE FUNCTION {s}.log_applied({n})"
                ).format(s=schema, t=sql.Identifier(tables[name]), n=sql.Literal(name))
            )
    return names


def _stream(indexes: list[str], *, docs: int, versions: int) -> list[RetrievalSyncRecord]:
    """Every document of every index written `versions` times, interleaved across indexes."""
    records = []
    for version in range(1, versions + 1):
        for i in range(docs):
            for index in indexes:
                rec = RetrievalSyncRecord(
                    index=index,
                    op=RetrievalSyncRecord.UPSERT,
                    document_id=f"d{i}",
                    version=version,
                    vector=_vector(i, version),
                    text=f"d{i} v{version}",
                )
                rec.source_timestamp.GetCurrentTime()
                records.append(rec)
    return records


def _log(mesh: Mesh, indexes: list[str]) -> Counter[tuple[str, str, int]]:
    with psycopg.connect(mesh.pg_dsn) as conn:
        rows = conn.execute(
            sql.SQL("SELECT index_name, id, version FROM {}.applied_log WHERE index_name = ANY(%s)").format(
                sql.Identifier(mesh.schemas["retrieval"])
            ),
            (indexes,),
        ).fetchall()
    return Counter((r[0], r[1], r[2]) for r in rows)


def _writers(mesh: Mesh, indexes: list[str]) -> dict[str, int]:
    with psycopg.connect(mesh.pg_dsn) as conn:
        return dict(
            conn.execute(
                sql.SQL(
                    "SELECT writer, count(*) FROM {}.applied_log WHERE index_name = ANY(%s) GROUP BY writer"
                ).format(sql.Identifier(mesh.schemas["retrieval"])),
                (indexes,),
            ).fetchall()
        )


async def _applied_when_complete(
    mesh: Mesh, indexes: list[str], *, docs: int, versions: int
) -> Counter[tuple[str, str, int]]:
    """The log once every document of every index holds its last version (then a moment more, for a
    late duplicate)."""
    wanted = {(index, f"d{i}") for index in indexes for i in range(docs)}

    def complete():
        log = _log(mesh, indexes)
        return log if {(idx, doc) for (idx, doc, v) in log if v == versions} >= wanted else None

    log = await eventually(complete, timeout=120)
    assert log, f"only {len(_log(mesh, indexes))} of {len(wanted) * versions} records applied"
    await asyncio.sleep(2)
    return _log(mesh, indexes)


def _dlq_count(mesh: Mesh) -> int:
    from confluent_kafka import Consumer, TopicPartition

    topic = mesh.topics["sync"] + ".dlq"
    consumer = Consumer({"bootstrap.servers": mesh.kafka_bootstrap, "group.id": f"count-{uuid.uuid4().hex[:8]}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        total = 0
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()
