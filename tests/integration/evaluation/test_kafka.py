"""Runs through `tessera.eval.requests`, every result on `tessera.eval.results`, bad requests to the DLQ."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from tessera.evaluation.v1 import evaluation_pb2 as pb
from tessera.events.v1 import evaluation_pb2 as events_pb

from services.common.kafka_producer import EventProducer
from services.fixtures import capitals
from tests.integration.evaluation.stack import ALICE, BOB, Stack
from tests.integration.serving.topic_reader import TopicReader

pytestmark = pytest.mark.integration


async def test_a_run_requested_on_kafka_publishes_every_row_and_its_summary(stack: Stack, unique: str) -> None:
    dataset, version = await stack.dataset(f"kafka_{unique}", capitals.evaluation_rows()[:3])
    spec = stack.spec(dataset, version, ["exact_match", "token_f1"], eval_run_id=f"k-{unique}")
    results = TopicReader(
        stack.kafka_bootstrap, stack.results_topic, events_pb.EvalResult.FromString, lambda r: r.eval_run_id
    )
    producer = EventProducer(stack.kafka_bootstrap, client_id=f"eval-test-{unique}")
    try:
        request = events_pb.EvalRequest(spec=spec, auth_token=ALICE)
        await producer.send(stack.requests_topic, request, key=spec.eval_run_id)
        # A redelivered request (same run id) starts nothing new.
        await producer.send(stack.requests_topic, request, key=spec.eval_run_id)
        async with asyncio.timeout(600):
            while not any(r.example_id == "" for r in results.by_key.get(spec.eval_run_id, [])):  # noqa: ASYNC110
                await asyncio.sleep(0.5)
        run = await stack.wait(spec.eval_run_id)
        published = results.by_key[spec.eval_run_id]
    finally:
        producer.close()
        results.close()

    assert run.state == pb.RUN_STATE_SUCCEEDED and run.created_by == "alice"
    rows = [r for r in published if r.example_id]
    (summary,) = [r for r in published if not r.example_id]
    assert sorted(r.example_id for r in rows) == ["0", "1", "2"]  # each row once: the duplicate ran nothing
    assert all(r.target_endpoint == stack.llm_endpoint for r in published)
    stored = {(r.example_id, r.repeat): r for r in await stack.results(spec.eval_run_id)}
    for r in rows:
        assert r.request_id == stored[(r.example_id, r.repeat)].request_id
    means = {m.metric: m for m in summary.metrics}
    for s in run.metrics:
        assert means[s.metric].value == pytest.approx(s.interval.estimate)
        assert (means[s.metric].measured, means[s.metric].unmeasured) == (s.measured, s.unmeasured)


async def test_requests_that_cannot_start_a_run_go_to_the_dlq_with_the_reason_and_no_token(
    stack: Stack, unique: str
) -> None:
    dataset, version = await stack.dataset(f"kafkabad_{unique}", capitals.evaluation_rows()[:2])
    dlq = TopicReader(
        stack.kafka_bootstrap,
        stack.requests_topic + ".dlq",
        events_pb.EvalRequest.FromString,
        lambda r: r.spec.eval_run_id,
    )
    producer = EventProducer(stack.kafka_bootstrap, client_id=f"eval-test-{unique}")
    bad = {
        f"badtoken-{unique}": (stack.spec(dataset, version, ["exact_match"]), "not-a-token"),
        f"unknown-{unique}": (stack.spec(dataset, version, ["vibes"]), ALICE),
        f"denied-{unique}": (stack.spec(dataset, version, ["exact_match"]), BOB),
    }
    try:
        for run_id, (spec, token) in bad.items():
            spec.eval_run_id = run_id
            await producer.send(stack.requests_topic, events_pb.EvalRequest(spec=spec, auth_token=token), key=run_id)
        await producer.send_bytes(stack.requests_topic, b"\xff not protobuf", key=f"garbage-{uuid.uuid4().hex}")
        found = await dlq.wait_for(list(bad), timeout=120)
    finally:
        producer.close()
        dlq.close()

    reasons = {}
    for run_id, (record,) in found.items():
        assert record.auth_token in ("", "[redacted]")
        raw = next(m for m in dlq.raw if (m.key() or b"").decode() == run_id)
        headers = dict(raw.headers())
        reasons[run_id] = (headers["tessera-error-code"].decode(), headers["tessera-error"].decode())
    assert reasons[f"badtoken-{unique}"][0] == "UNAUTHENTICATED"
    assert reasons[f"unknown-{unique}"][0] == "INVALID_ARGUMENT" and "vibes" in reasons[f"unknown-{unique}"][1]
    assert reasons[f"denied-{unique}"][0] == "PERMISSION_DENIED"
