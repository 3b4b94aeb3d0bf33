"""Inference over Kafka: request -> response on the reply topic, errors answered and dead-lettered."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition
from google.protobuf import json_format
from tessera.events.v1 import serving_pb2 as events_pb
from tessera.serving.v1 import serving_pb2 as pb

from services.common import kafka_admin
from services.common.auth import bearer
from services.serving.kafka_api import KafkaRequestServer, ReplyTopics
from tests.integration.serving.conftest import ALICE, BOB, Mesh
from tests.integration.serving.topic_reader import TopicReader

pytestmark = pytest.mark.integration


def _rid(kind: str) -> str:
    return f"kafka-{kind}-{uuid.uuid4().hex[:8]}"


async def test_a_prompt_request_gets_a_response_with_its_id(mesh: Mesh) -> None:
    rid = _rid("prompt")
    await mesh.send_request(
        events_pb.InferenceRequest(
            request_id=rid,
            endpoint=mesh.llm_endpoint,
            prompt="Return a sorted list.",
            sampling=events_pb.SamplingParams(temperature=0.0, max_tokens=8),
            auth_token=ALICE,
        )
    )

    (response,) = (await mesh.responses.wait_for([rid]))[rid]
    assert response.status == "OK", response.error_message
    assert response.text and 0 < response.completion_tokens <= 8
    assert (response.served_model, response.model_version) == (mesh.llm_model, "1")


async def test_a_tensor_request_in_json_gets_scores(mesh: Mesh) -> None:
    rid = _rid("json")
    body = {
        "request_id": rid,
        "endpoint": mesh.tabular_endpoint,
        "tensors": {"features": [[1, 1, 1, 1]], "category": [5]},
        "auth_token": ALICE,
    }
    await mesh.producer.send_bytes(
        mesh.requests_topic, json.dumps(body).encode(), key=rid, headers=[("content-type", b"application/json")]
    )

    (response,) = (await mesh.responses.wait_for([rid]))[rid]
    assert response.status == "OK", response.error_message
    # Version 1 of the tabular model (the champion): score = sum(features) + category.
    assert json_format.MessageToDict(response.tensors) == {"score": [[9.0]]}
    assert response.model_version == str(mesh.tabular_versions[0])


async def test_a_reply_topic_on_the_allow_list_is_honoured(mesh: Mesh, unique: str) -> None:
    reply_topic = f"tessera.serving.responses.test-{unique}"
    kafka_admin.ensure_topics(mesh.kafka_bootstrap, [reply_topic], partitions=1)
    reader = TopicReader(
        mesh.kafka_bootstrap, reply_topic, events_pb.InferenceResponse.FromString, lambda m: m.request_id
    )
    try:
        rid = _rid("reply")
        await mesh.send_request(
            events_pb.InferenceRequest(
                request_id=rid,
                endpoint=mesh.llm_endpoint,
                reply_to=reply_topic,
                prompt="Sort.",
                sampling=events_pb.SamplingParams(max_tokens=4),
                auth_token=ALICE,
            )
        )
        (response,) = (await reader.wait_for([rid]))[rid]
        assert response.status == "OK"
        assert rid not in mesh.responses.by_key
    finally:
        reader.close()


async def test_a_reply_topic_off_the_allow_list_is_refused_on_the_default_topic_and_never_created(
    mesh: Mesh, unique: str
) -> None:
    rid, wanted = _rid("off-list"), f"someone.elses.topic.{unique}"
    await mesh.send_request(
        events_pb.InferenceRequest(
            request_id=rid, endpoint=mesh.llm_endpoint, reply_to=wanted, prompt="Sort.", auth_token=ALICE
        )
    )

    (response,) = (await mesh.responses.wait_for([rid]))[rid]
    assert response.status == "PERMISSION_DENIED" and "not allowed" in response.error_message
    (logged,) = (await mesh.payloads.wait_for([rid]))[rid]
    assert logged.status == "PERMISSION_DENIED" and logged.completion_tokens == 0
    assert (await _dead_letters(mesh, rid))[0][0]["tessera-error-code"] == "PERMISSION_DENIED"
    topics = await asyncio.to_thread(lambda: kafka_admin.admin(mesh.kafka_bootstrap).list_topics(timeout=10).topics)
    assert wanted not in topics


async def test_one_refused_record_does_not_run_its_neighbours_twice(mesh: Mesh) -> None:
    good = [_rid(f"batch{i}") for i in range(9)]
    bad = _rid("bad-topic")
    requests = [
        events_pb.InferenceRequest(
            request_id=rid,
            endpoint=mesh.llm_endpoint,
            prompt="Sort.",
            sampling=events_pb.SamplingParams(max_tokens=4),
            auth_token=ALICE,
        )
        for rid in good
    ]
    requests.insert(
        4,
        events_pb.InferenceRequest(
            request_id=bad, endpoint=mesh.llm_endpoint, reply_to="bad topic!", prompt="x", auth_token=ALICE
        ),
    )
    # One produce burst, so the consumer takes them as one batch.
    for request in requests:
        mesh.producer.produce(mesh.requests_topic, request, key=request.request_id)
    await mesh.producer.flush()

    responses = await mesh.responses.wait_for([*good, bad])
    await mesh.payloads.wait_for([*good, bad])
    await asyncio.sleep(2.0)  # room for a duplicate to show up, if one were written
    assert {rid: len(mesh.responses.by_key[rid]) for rid in [*good, bad]} == dict.fromkeys([*good, bad], 1)
    assert {rid: len(mesh.payloads.by_key[rid]) for rid in [*good, bad]} == dict.fromkeys([*good, bad], 1)
    assert all(responses[rid][0].status == "OK" for rid in good)
    assert responses[bad][0].status == "PERMISSION_DENIED"


async def test_a_request_past_its_time_to_live_is_answered_without_running(mesh: Mesh) -> None:
    rid = _rid("stale")
    request = events_pb.InferenceRequest(request_id=rid, endpoint=mesh.llm_endpoint, prompt="Sort.", auth_token=ALICE)
    request.created_at.FromSeconds(int(time.time()) - 2 * 3600)
    await mesh.send_request(request)

    (response,) = (await mesh.responses.wait_for([rid]))[rid]
    assert response.status == "DEADLINE_EXCEEDED" and "old" in response.error_message
    assert response.completion_tokens == 0


@pytest.mark.parametrize(
    ("endpoint_attr", "token", "status"),
    [
        ("missing", ALICE, "NOT_FOUND"),
        ("llm_endpoint", BOB, "PERMISSION_DENIED"),
        ("llm_endpoint", "", "UNAUTHENTICATED"),
    ],
    ids=["unknown-endpoint", "no-execute", "no-token"],
)
async def test_a_bad_request_is_answered_and_dead_lettered(
    mesh: Mesh, endpoint_attr: str, token: str, status: str
) -> None:
    rid = _rid(status.lower())
    endpoint = getattr(mesh, endpoint_attr) if endpoint_attr != "missing" else "no-such-endpoint"
    await mesh.send_request(
        events_pb.InferenceRequest(request_id=rid, endpoint=endpoint, prompt="hi", auth_token=token)
    )

    (response,) = (await mesh.responses.wait_for([rid]))[rid]
    assert response.status == status and response.error_message
    dead = await _dead_letters(mesh, rid)
    assert dead and dead[0][0]["tessera-error-code"] == status
    # The dead-letter copy keeps the request but not the caller's token.
    value = dead[0][1]
    assert (not token or token.encode() not in value) and b"hi" in value


async def test_garbage_goes_to_the_dlq_and_is_answered_when_its_id_is_readable(mesh: Mesh) -> None:
    readable, unreadable = _rid("garbage"), _rid("garbage-nokey")
    # JSON that is not an InferenceRequest (wrong types), with a readable request id.
    await mesh.producer.send_bytes(
        mesh.requests_topic,
        json.dumps(
            {"request_id": readable, "endpoint": 42, "sampling": "hot", "auth_token": "garbage-secret"}
        ).encode(),
        headers=[("content-type", b"application/json")],
    )
    # Bytes that are not protobuf at all, with no key: nothing to answer, but dead-lettered.
    await mesh.producer.send_bytes(
        mesh.requests_topic, b"\xff\xfe not protobuf", headers=[("tessera-record-id", unreadable.encode())]
    )

    (response,) = (await mesh.responses.wait_for([readable]))[readable]
    assert response.status == "INVALID_ARGUMENT" and "invalid JSON" in response.error_message
    ((headers, value),) = await _dead_letters(mesh, readable)
    assert headers["tessera-error-code"] == "INVALID_ARGUMENT"
    # Even a record that never decoded keeps no credential in its dead-letter copy.
    assert b"garbage-secret" not in value and readable.encode() in value
    assert await _dead_letters(mesh, unreadable, by_record_id=True)
    assert unreadable not in mesh.responses.by_key


async def _dead_letters(mesh: Mesh, rid: str, *, by_record_id: bool = False) -> list[tuple[dict, bytes]]:
    # A blocking consumer: off the event loop, which the service under test shares.
    return await asyncio.to_thread(_read_dead_letters, mesh, rid, by_record_id)


def _read_dead_letters(mesh: Mesh, rid: str, by_record_id: bool, timeout_s: float = 30.0) -> list[tuple[dict, bytes]]:
    consumer = Consumer(
        {
            "bootstrap.servers": mesh.kafka_bootstrap,
            "group.id": f"dlq-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([mesh.requests_topic + ".dlq"])
    found: list[tuple[dict, bytes]] = []
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not found:
            for message in consumer.consume(100, 0.5):
                if message.error():
                    continue
                headers = {k: (v or b"").decode("utf-8", "replace") for k, v in message.headers() or []}
                key = (message.key() or b"").decode()
                body = (message.value() or b"").decode("utf-8", "replace")
                if (by_record_id and headers.get("tessera-record-id") == rid) or (
                    not by_record_id and (key == rid or rid in body)
                ):
                    found.append((headers, message.value() or b""))
    finally:
        consumer.close()
    return found


async def test_a_batch_slower_than_the_poll_interval_is_answered_once_and_committed(mesh: Mesh, unique: str) -> None:
    # One request at a time: a batch of long generations takes far longer than the consumer's poll interval.
    endpoint = f"slow-{unique}"
    await mesh.serving_stub().CreateEndpoint(
        pb.CreateEndpointRequest(
            name=endpoint,
            served_models=[pb.ServedModel(model_name=mesh.llm_model, version=1)],
            max_concurrency=1,
            wait=True,
        ),
        metadata=bearer(ALICE),
    )
    topic, group = f"test.slow-requests.{unique}", f"serving-slow-{unique}"
    kafka_admin.ensure_topics(mesh.kafka_bootstrap, [topic, topic + ".dlq"], partitions=1)
    app = mesh.serving

    def replica() -> KafkaRequestServer:
        return KafkaRequestServer(
            app.inference,
            app.server.authenticator,
            app.producer,
            bootstrap=mesh.kafka_bootstrap,
            topic=topic,
            group_id=group,
            reply_topics=ReplyTopics("", mesh.responses_topic),
            batch_size=64,
            payload_log=app.payload_log,
            request_timeout_s=3.0,
            **{"session.timeout.ms": 6_000, "max.poll.interval.ms": 6_000},
        )

    # Two replicas in the group: were the busy one evicted, the other would take the partition and run the batch again.
    replicas = [replica(), replica()]
    running = []
    for server in replicas:
        running.append(asyncio.create_task(server.run()))
        await server.loop.wait_assigned()
    ids = [_rid(f"slow{i}") for i in range(80)]
    try:
        sampling = events_pb.SamplingParams(max_tokens=128, ignore_eos=True)
        for rid in ids:
            request = events_pb.InferenceRequest(
                request_id=rid, endpoint=endpoint, prompt="Sort.", sampling=sampling, auth_token=ALICE
            )
            mesh.producer.produce(topic, request, key=rid)
        await mesh.producer.flush()

        responses = await mesh.responses.wait_for(ids, timeout=180)
        await asyncio.sleep(10.0)  # past the poll interval: a redelivered batch would be answered again
        assert {rid: len(mesh.responses.by_key[rid]) for rid in ids} == dict.fromkeys(ids, 1)
        statuses = {responses[rid][0].status for rid in ids}
        assert "DEADLINE_EXCEEDED" in statuses and statuses <= {"OK", "DEADLINE_EXCEEDED"}
        await mesh.payloads.wait_for(ids)
        assert {rid: len(mesh.payloads.by_key[rid]) for rid in ids} == dict.fromkeys(ids, 1)
    finally:
        for server in replicas:
            server.stop()
        await asyncio.gather(*running)
    assert await asyncio.to_thread(_committed, mesh.kafka_bootstrap, group, topic) == len(ids)


def _committed(bootstrap: str, group: str, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        (position,) = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        return position.offset
    finally:
        consumer.close()
