"""Inference over Kafka: request -> response on the reply topic, errors answered and dead-lettered."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
from confluent_kafka import Consumer
from google.protobuf import json_format
from tessera.events.v1 import serving_pb2 as events_pb

from tests.integration.serving.conftest import ALICE, BOB, Mesh

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


async def test_a_custom_reply_topic_is_honoured(mesh: Mesh, fresh_topic: str) -> None:
    from tests.integration.serving.topic_reader import TopicReader

    reader = TopicReader(
        mesh.kafka_bootstrap, fresh_topic, events_pb.InferenceResponse.FromString, lambda m: m.request_id
    )
    try:
        rid = _rid("reply")
        await mesh.send_request(
            events_pb.InferenceRequest(
                request_id=rid,
                endpoint=mesh.llm_endpoint,
                reply_to=fresh_topic,
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
    assert dead and dead[0]["tessera-error-code"] == status


async def test_garbage_goes_to_the_dlq_and_is_answered_when_its_id_is_readable(mesh: Mesh) -> None:
    readable, unreadable = _rid("garbage"), _rid("garbage-nokey")
    # JSON that is not an InferenceRequest (wrong types), with a readable request id.
    await mesh.producer.send_bytes(
        mesh.requests_topic,
        json.dumps({"request_id": readable, "endpoint": 42, "sampling": "hot"}).encode(),
        headers=[("content-type", b"application/json")],
    )
    # Bytes that are not protobuf at all, with no key: nothing to answer, but dead-lettered.
    await mesh.producer.send_bytes(
        mesh.requests_topic, b"\xff\xfe not protobuf", headers=[("tessera-record-id", unreadable.encode())]
    )

    (response,) = (await mesh.responses.wait_for([readable]))[readable]
    assert response.status == "INVALID_ARGUMENT" and "invalid JSON" in response.error_message
    assert (await _dead_letters(mesh, readable))[0]["tessera-error-code"] == "INVALID_ARGUMENT"
    assert await _dead_letters(mesh, unreadable, by_record_id=True)
    assert unreadable not in mesh.responses.by_key


async def _dead_letters(mesh: Mesh, rid: str, *, by_record_id: bool = False) -> list[dict]:
    # A blocking consumer: off the event loop, which the service under test shares.
    return await asyncio.to_thread(_read_dead_letters, mesh, rid, by_record_id)


def _read_dead_letters(mesh: Mesh, rid: str, by_record_id: bool, timeout_s: float = 30.0) -> list[dict]:
    consumer = Consumer(
        {
            "bootstrap.servers": mesh.kafka_bootstrap,
            "group.id": f"dlq-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([mesh.requests_topic + ".dlq"])
    found: list[dict] = []
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
                    found.append(headers)
    finally:
        consumer.close()
    return found
