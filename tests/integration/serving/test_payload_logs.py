"""Exactly one payload-log record per request, on every path, for successes and errors alike."""

from __future__ import annotations

import asyncio
import struct
import uuid

import grpc
import pytest
from google.protobuf import json_format
from inference import grpc_service_pb2 as oip
from prometheus_client import REGISTRY
from tessera.events.v1 import serving_pb2 as events_pb
from tessera.serving.v1 import serving_pb2 as pb

from services.common.auth import Principal, bearer
from services.common.errors import NotFound
from services.serving.app import ServingApp
from tests.integration.serving.conftest import ALICE, Mesh

pytestmark = pytest.mark.integration

SAMPLING = events_pb.SamplingParams(temperature=0.0, max_tokens=6)


def _tensor_request(endpoint: str, request_id: str) -> oip.ModelInferRequest:
    request = oip.ModelInferRequest(model_name=endpoint, id=request_id)
    request.inputs.add(name="features", datatype="FP32", shape=[1, 4])
    request.inputs.add(name="category", datatype="INT64", shape=[1])
    request.raw_input_contents.extend([struct.pack("<4f", 1, 2, 3, 4), struct.pack("<q", 7)])
    return request


async def _expect_error(call) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code()


async def test_every_path_logs_exactly_one_record_per_request(mesh: Mesh) -> None:
    u = uuid.uuid4().hex[:6]
    ids = {
        name: f"log-{name}-{u}"
        for name in ("generate", "stream", "grpc-missing", "oip", "oip-missing", "kafka", "kafka-missing")
    }
    stub, oip_stub, md = mesh.serving_stub(), mesh.oip_stub(), bearer(ALICE)

    await stub.Generate(
        pb.GenerateRequest(endpoint=mesh.llm_endpoint, prompt="Sort.", sampling=SAMPLING, request_id=ids["generate"]),
        metadata=md,
    )
    _ = [
        c
        async for c in stub.GenerateStream(
            pb.GenerateRequest(endpoint=mesh.llm_endpoint, prompt="Sort.", sampling=SAMPLING, request_id=ids["stream"]),
            metadata=md,
        )
    ]
    missing = pb.GenerateRequest(endpoint="no-such-endpoint", prompt="Sort.", request_id=ids["grpc-missing"])
    assert await _expect_error(stub.Generate(missing, metadata=md)) == grpc.StatusCode.NOT_FOUND
    await oip_stub.ModelInfer(_tensor_request(mesh.tabular_endpoint, ids["oip"]), metadata=md)
    assert (
        await _expect_error(oip_stub.ModelInfer(_tensor_request("no-such-endpoint", ids["oip-missing"]), metadata=md))
        == grpc.StatusCode.NOT_FOUND
    )
    await mesh.send_request(
        events_pb.InferenceRequest(
            request_id=ids["kafka"], endpoint=mesh.llm_endpoint, prompt="Sort.", sampling=SAMPLING, auth_token=ALICE
        )
    )
    await mesh.send_request(
        events_pb.InferenceRequest(
            request_id=ids["kafka-missing"], endpoint="no-such-endpoint", prompt="x", auth_token=ALICE
        )
    )

    logged = await mesh.payloads.wait_for(list(ids.values()))
    await mesh.responses.wait_for([ids["kafka"], ids["kafka-missing"]])
    await asyncio.sleep(1.0)  # room for a duplicate to show up, if one were written
    counts = {name: len(mesh.payloads.by_key[rid]) for name, rid in ids.items()}
    assert counts == dict.fromkeys(ids, 1)

    ok = logged[ids["generate"]][0]
    assert (ok.status, ok.source, ok.endpoint, ok.principal) == ("OK", "grpc", mesh.llm_endpoint, "alice")
    assert (ok.served_model, ok.model_version) == (mesh.llm_model, "1")
    assert ok.prompt_tokens > 0 and 0 < ok.completion_tokens <= 6 and ok.finish_reason in ("stop", "length")
    assert ok.latency_ms > 0 and 0 < ok.time_to_first_token_ms <= ok.latency_ms
    assert ok.trace_id and ok.timestamp.seconds > 0
    assert json_format.MessageToDict(ok.inputs) == {"prompt": "Sort."}
    assert json_format.MessageToDict(ok.outputs)["text"]

    tensor = logged[ids["oip"]][0]
    assert (tensor.status, tensor.source) == ("OK", "oip")
    assert json_format.MessageToDict(tensor.inputs) == {"features": [[1.0, 2.0, 3.0, 4.0]], "category": [7.0]}
    assert "score" in json_format.MessageToDict(tensor.outputs)

    assert logged[ids["stream"]][0].completion_tokens > 0
    assert logged[ids["kafka"]][0].source == "kafka" and logged[ids["kafka"]][0].status == "OK"
    for name in ("grpc-missing", "oip-missing", "kafka-missing"):
        record = logged[ids[name]][0]
        assert record.status == "NOT_FOUND" and "does not exist" in record.error_message


async def test_no_payload_log_record_was_dropped(mesh: Mesh) -> None:
    assert REGISTRY.get_sample_value("tessera_serving_payload_logs_dropped_total") == 0


async def test_a_stopped_replica_delivers_its_whole_payload_queue(mesh: Mesh) -> None:
    settings = mesh.serving.settings
    replica = ServingApp(
        type(settings)(
            **{**settings.__dict__, "serving_run_request_consumer": False, "serving_run_registry_consumer": False}
        ),
        serve_metrics=False,
    )
    await replica.start()
    u = uuid.uuid4().hex[:6]
    ids = [f"queued-{u}-{i}" for i in range(3000)]
    try:
        for rid in ids:
            replica.inference.log_rejected(rid, "no-such-endpoint", "grpc", Principal("alice"), NotFound("gone"))
    finally:
        await replica.stop()  # with thousands still queued

    logged = await mesh.payloads.wait_for(ids, timeout=120)
    assert all(records[0].status == "NOT_FOUND" for records in logged.values())


async def test_the_payload_backlog_is_exported_and_drains_to_zero(mesh: Mesh) -> None:
    async with asyncio.timeout(60):
        while REGISTRY.get_sample_value("tessera_serving_payload_backlog_records") != 0:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    assert REGISTRY.get_sample_value("tessera_serving_payload_backlog_bytes") == 0
