"""Two processes of each service on one machine, against one Kafka and one PostgreSQL.

Replicas of a service share its schema, topics and consumer group (as
`make up REPLICAS=2` runs them): the group splits the partitions between them,
an endpoint created on one is served by the other, and a replica killed with
SIGKILL hands its partitions to the survivor with every record handled once.
(Training jobs taken by whichever worker is free: there is no training service yet.)
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
import psycopg
import pytest
import pytest_asyncio
from confluent_kafka import Consumer, Producer
from inference import grpc_service_pb2_grpc
from psycopg import sql
from tessera.events.v1.payload_log_pb2 import PayloadLog

from services.common.auth import bearer
from services.common.db import Database
from services.common.kafka_producer import EventProducer
from services.fixtures.mesh_processes import (
    USER_TOKENS,
    Mesh,
    TabularEndpoint,
    deploy_tabular,
    group_assignment,
    start_mesh,
    tensor_request,
)
from tests.polling import eventually

pytestmark = pytest.mark.integration

PARTITIONS = 4


@dataclass
class Replicas:
    mesh: Mesh
    # Created before the second serving replica started, so both serve it whether or not
    # endpoints propagate between running replicas.
    endpoint: TabularEndpoint


@pytest_asyncio.fixture(scope="module")
async def replicas(kafka_bootstrap: str, pg_dsn: str, request: pytest.FixtureRequest):
    mesh = await start_mesh(
        kafka_bootstrap,
        pg_dsn,
        Path(tempfile.mkdtemp(prefix="tessera-replicas-")),
        serving=1,
        monitoring=2,
        partitions=PARTITIONS,
    )
    try:
        endpoint = await deploy_tabular(mesh, mesh.serving[0], users=list(USER_TOKENS))
        await mesh.add("serving")
        yield Replicas(mesh, endpoint)
    finally:
        mesh.stop()
    if not request.session.testsfailed:  # after a failure the service logs stay for reading
        shutil.rmtree(mesh.work, ignore_errors=True)


def _split(mesh: Mesh, group: str, topic: str) -> dict[str, set[int]] | None:
    """The group's members and their partitions of `topic` once every partition has one owner."""
    members = {
        member: {p for t, p in partitions if t == topic}
        for member, partitions in group_assignment(mesh.kafka_bootstrap, group).items()
    }
    owned = [p for ps in members.values() for p in ps]
    return members if sorted(owned) == list(range(PARTITIONS)) else None


def _shared(mesh: Mesh, group: str, topic: str) -> dict[str, set[int]] | None:
    members = _split(mesh, group, topic)
    return members if members and len(members) == 2 and all(members.values()) else None


def _ingested(mesh: Mesh, request_ids: list[str]) -> dict[str, int]:
    with psycopg.connect(mesh.pg_dsn) as conn:
        rows = conn.execute(
            sql.SQL(
                "SELECT request_id, count(*) FROM {}.inference_records WHERE request_id = ANY(%s) GROUP BY request_id"
            ).format(sql.Identifier(mesh.schemas["monitoring"])),
            (request_ids,),
        ).fetchall()
    return dict(rows)


def _all_ingested(mesh: Mesh, request_ids: list[str]) -> dict[str, int] | None:
    counts = _ingested(mesh, request_ids)
    return counts if len(counts) == len(request_ids) else None


def _payload_log(endpoint: str, request_id: str) -> PayloadLog:
    log = PayloadLog(
        request_id=request_id,
        endpoint=endpoint,
        served_model="main.default.tiny",
        model_version="1",
        source="grpc",
        status="OK",
        latency_ms=12.5,
        prompt_tokens=3,
        completion_tokens=5,
    )
    log.inputs.update({"prompt": "x" * 20})
    log.outputs.update({"text": "y" * 20})
    log.timestamp.FromNanoseconds(time.time_ns())
    return log


async def test_each_service_splits_its_partitions_between_its_replicas(replicas: Replicas):
    mesh = replicas.mesh
    for group, topic in (
        (mesh.groups["serving"], mesh.topics["requests"]),
        (mesh.groups["monitoring"], mesh.topics["payloads"]),
    ):
        # Two members, both holding partitions, none held twice.
        members = await eventually(lambda g=group, t=topic: _shared(mesh, g, t), timeout=60)
        assert members, f"{group}: the partitions of {topic} were never shared by two replicas"
        owned = [p for ps in members.values() for p in ps]
        assert len(owned) == len(set(owned)) == PARTITIONS


async def test_an_endpoint_created_on_one_replica_is_served_by_the_other(replicas: Replicas):
    mesh = replicas.mesh
    endpoint = await deploy_tabular(mesh, mesh.serving[0], users=["alice"])

    async def answered_by_b() -> str:
        async with grpc.aio.insecure_channel(mesh.serving[1].address) as channel:
            try:
                reply = await grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
                    tensor_request(endpoint.name, f"on-b-{uuid.uuid4().hex[:6]}"),
                    metadata=bearer(USER_TOKENS["alice"]),
                    timeout=30,
                )
            except grpc.aio.AioRpcError as exc:
                return f"not yet: {exc.code().name} {exc.details()}"
        return "ok" if reply.outputs else "no outputs"

    outcomes: list[str] = []

    async def served() -> bool:
        outcomes.append(await answered_by_b())
        return outcomes[-1] == "ok"

    assert await eventually(served, timeout=120, every=1.0), f"replica B never served it: {outcomes[-1]}"


async def test_requests_over_kafka_are_answered_once_across_replicas(replicas: Replicas):
    mesh, endpoint = replicas.mesh, replicas.endpoint
    await _wait_served_everywhere(mesh, endpoint.name, "bob")
    ids = [f"kafka-{i}-{uuid.uuid4().hex[:6]}" for i in range(40)]
    responses = _reader(mesh, mesh.topics["responses"])
    try:
        producer = Producer({"bootstrap.servers": mesh.kafka_bootstrap})
        for rid in ids:
            body = {
                "request_id": rid,
                "endpoint": endpoint.name,
                "tensors": {"features": [[1, 1, 1, 1]], "category": [1]},
                "auth_token": USER_TOKENS["bob"],
            }
            # Keys spread the requests over every partition, so both replicas answer some.
            producer.produce(
                mesh.topics["requests"],
                json.dumps(body).encode(),
                key=rid,
                headers=[("content-type", b"application/json")],
            )
        assert producer.flush(30) == 0
        seen = await _collect(responses, set(ids), timeout_s=120)
    finally:
        responses.close()
    assert set(seen) == set(ids)
    assert all(count == 1 for count in seen.values()), {k: v for k, v in seen.items() if v != 1}
    ingested = await eventually(lambda: _all_ingested(mesh, ids), timeout=60)
    assert ingested and all(count == 1 for count in ingested.values())


async def test_a_killed_monitoring_replica_hands_over_and_every_log_is_ingested_once(replicas: Replicas):
    mesh = replicas.mesh
    endpoint = f"killed-{uuid.uuid4().hex[:6]}"
    ids = [f"{endpoint}-{i}" for i in range(3000)]
    producer = EventProducer(mesh.kafka_bootstrap, client_id="replica-test")
    victim, survivor = mesh.monitoring[1], mesh.monitoring[0]
    try:
        # A stream over every partition; one replica dies in the middle of it.
        for i, rid in enumerate(ids):
            producer.produce(mesh.topics["payloads"], _payload_log(endpoint, rid), key=rid, record_id=rid)
            if i % 100 == 99:
                await producer.flush()
                await asyncio.sleep(0.02)
            if i == len(ids) // 3:
                await producer.flush()
                victim.kill()
        await producer.flush()
    finally:
        producer.close()
    members = await eventually(
        lambda: (m := _split(mesh, mesh.groups["monitoring"], mesh.topics["payloads"])) and len(m) == 1 and m,
        timeout=90,
    )
    assert members and list(members.values()) == [set(range(PARTITIONS))], "the survivor never took every partition"
    ingested = await eventually(lambda: _all_ingested(mesh, ids), timeout=120)
    assert ingested, f"only {len(_ingested(mesh, ids))} of {len(ids)} logs were ingested"
    assert all(count == 1 for count in ingested.values())
    assert survivor.alive()
    # Nothing was dead-lettered on the way.
    assert _count(mesh, mesh.topics["payloads"] + ".dlq") == 0


async def test_a_killed_serving_replica_hands_its_requests_to_the_other(replicas: Replicas):
    mesh, endpoint = replicas.mesh, replicas.endpoint
    await _wait_served_everywhere(mesh, endpoint.name, "carol")
    mesh.serving[1].kill()
    ids = [f"after-kill-{i}-{uuid.uuid4().hex[:6]}" for i in range(20)]
    responses = _reader(mesh, mesh.topics["responses"])
    try:
        producer = Producer({"bootstrap.servers": mesh.kafka_bootstrap})
        for rid in ids:
            body = {
                "request_id": rid,
                "endpoint": endpoint.name,
                "tensors": {"features": [[2, 2, 2, 2]], "category": [0]},
                "auth_token": USER_TOKENS["carol"],
            }
            producer.produce(
                mesh.topics["requests"],
                json.dumps(body).encode(),
                key=rid,
                headers=[("content-type", b"application/json")],
            )
        assert producer.flush(30) == 0
        seen = await _collect(responses, set(ids), timeout_s=120)
    finally:
        responses.close()
    assert set(seen) == set(ids) and all(count == 1 for count in seen.values()), seen


async def test_replicas_starting_together_set_up_their_schema_once(pg_dsn: str):
    """Found by starting two serving replicas at once: both ran CREATE SCHEMA IF NOT EXISTS and
    one died on the catalog's unique index."""
    schema = f"replica_setup_{uuid.uuid4().hex[:8]}"
    databases = [Database(pg_dsn, schema, max_size=1) for _ in range(6)]
    try:
        for _attempt in range(3):  # the race is narrow: give it several chances to show
            opened = await asyncio.gather(*(db.open() for db in databases), return_exceptions=True)
            assert not [o for o in opened if isinstance(o, BaseException)], opened
            await asyncio.gather(*(db.close() for db in databases))
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
            databases = [Database(pg_dsn, schema, max_size=1) for _ in range(6)]
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


# -- helpers -----------------------------------------------------------------------------------------


async def _wait_served_everywhere(mesh: Mesh, endpoint: str, user: str) -> None:
    for replica in mesh.serving:
        if not replica.alive():
            continue

        async def ready(address=replica.address) -> bool:
            async with grpc.aio.insecure_channel(address) as channel:
                try:
                    await grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
                        tensor_request(endpoint, f"probe-{uuid.uuid4().hex[:6]}"),
                        metadata=bearer(USER_TOKENS[user]),
                        timeout=30,
                    )
                    return True
                except grpc.aio.AioRpcError:
                    return False

        assert await eventually(ready, timeout=120, every=1.0), f"{endpoint} never served by {replica}"


def _reader(mesh: Mesh, topic: str) -> Consumer:
    consumer = Consumer(
        {
            "bootstrap.servers": mesh.kafka_bootstrap,
            "group.id": f"replica-test-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    return consumer


async def _collect(consumer: Consumer, wanted: set[str], timeout_s: float) -> dict[str, int]:
    """Count the responses per request id until every wanted one arrived (and a little longer, to
    catch a duplicate) or the time is up."""
    from tessera.events.v1 import serving_pb2 as events_pb

    seen: dict[str, int] = {}
    deadline = time.monotonic() + timeout_s
    settle_until = None
    while time.monotonic() < deadline:
        for message in await asyncio.to_thread(consumer.consume, 500, 0.5):
            if message.error():
                continue
            rid = events_pb.InferenceResponse.FromString(message.value()).request_id
            if rid in wanted:
                seen[rid] = seen.get(rid, 0) + 1
        if settle_until is None and wanted <= set(seen):
            settle_until = time.monotonic() + 3.0
        if settle_until is not None and time.monotonic() > settle_until:
            break
    return seen


def _count(mesh: Mesh, topic: str) -> int:
    from confluent_kafka import TopicPartition

    consumer = Consumer({"bootstrap.servers": mesh.kafka_bootstrap, "group.id": f"count-{uuid.uuid4().hex[:8]}"})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        total = 0
        for partition in metadata.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()
