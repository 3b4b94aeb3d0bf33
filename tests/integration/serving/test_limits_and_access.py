"""Limits fail at once with the reason; callers without EXECUTE are refused."""

from __future__ import annotations

import uuid

import grpc
import pytest
from tessera.events.v1 import serving_pb2 as events_pb
from tessera.serving.v1 import serving_pb2 as pb

from services.common.auth import bearer
from tests.integration.serving.conftest import ALICE, BOB, MAX_REQUEST_BYTES, MAX_TOKENS, Mesh

pytestmark = pytest.mark.integration


async def _error(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def test_an_oversized_request_is_resource_exhausted_and_logged(mesh: Mesh) -> None:
    rid = f"oversized-{uuid.uuid4().hex[:6]}"
    request = pb.GenerateRequest(endpoint=mesh.llm_endpoint, prompt="x" * (MAX_REQUEST_BYTES + 1), request_id=rid)

    error = await _error(mesh.serving_stub().Generate(request, metadata=bearer(ALICE)))

    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"limit of {MAX_REQUEST_BYTES} bytes" in error.details()
    assert [r.status for r in (await mesh.payloads.wait_for([rid]))[rid]] == ["RESOURCE_EXHAUSTED"]


async def test_too_many_tokens_is_invalid_argument(mesh: Mesh) -> None:
    request = pb.GenerateRequest(
        endpoint=mesh.llm_endpoint, prompt="Sort.", sampling=events_pb.SamplingParams(max_tokens=MAX_TOKENS + 1)
    )

    error = await _error(mesh.serving_stub().Generate(request, metadata=bearer(ALICE)))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "max_tokens" in error.details()


async def test_a_prompt_longer_than_the_model_is_invalid_argument(mesh: Mesh) -> None:
    request = pb.GenerateRequest(endpoint=mesh.llm_endpoint, prompt="word " * 3000)

    error = await _error(mesh.serving_stub().Generate(request, metadata=bearer(ALICE)))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_over_the_concurrency_limit_is_resource_exhausted_at_once(mesh: Mesh) -> None:
    stub, name = mesh.serving_stub(), f"one-at-a-time-{uuid.uuid4().hex[:6]}"
    await stub.CreateEndpoint(
        pb.CreateEndpointRequest(
            name=name,
            served_models=[pb.ServedModel(model_name=mesh.llm_model, version=1)],
            max_concurrency=1,
            wait=True,
        ),
        metadata=bearer(ALICE),
    )
    long = events_pb.SamplingParams(max_tokens=MAX_TOKENS, ignore_eos=True)
    first = stub.GenerateStream(
        pb.GenerateRequest(endpoint=name, prompt="Sort.", sampling=long), metadata=bearer(ALICE)
    )
    try:
        await first.read()  # the first request holds the only slot while it streams
        error = await _error(stub.Generate(pb.GenerateRequest(endpoint=name, prompt="Sort."), metadata=bearer(ALICE)))
    finally:
        first.cancel()
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "concurrency limit (1" in error.details()
    await stub.DeleteEndpoint(pb.DeleteEndpointRequest(name=name), metadata=bearer(ALICE))


async def test_a_caller_without_execute_cannot_call_or_create(mesh: Mesh) -> None:
    stub = mesh.serving_stub()

    call = await _error(
        stub.Generate(pb.GenerateRequest(endpoint=mesh.llm_endpoint, prompt="hi"), metadata=bearer(BOB))
    )
    create = await _error(
        stub.CreateEndpoint(
            pb.CreateEndpointRequest(
                name=f"bobs-{uuid.uuid4().hex[:6]}",
                served_models=[pb.ServedModel(model_name=mesh.llm_model, version=1)],
            ),
            metadata=bearer(BOB),
        )
    )

    assert call.code() == grpc.StatusCode.PERMISSION_DENIED and "EXECUTE" in call.details()
    assert create.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_an_unknown_endpoint_is_not_found(mesh: Mesh) -> None:
    error = await _error(
        mesh.serving_stub().Generate(pb.GenerateRequest(endpoint="nowhere", prompt="hi"), metadata=bearer(ALICE))
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND


async def test_an_endpoint_on_an_unknown_version_is_refused(mesh: Mesh) -> None:
    error = await _error(
        mesh.serving_stub().CreateEndpoint(
            pb.CreateEndpointRequest(
                name="never", served_models=[pb.ServedModel(model_name=mesh.llm_model, version=99)]
            ),
            metadata=bearer(ALICE),
        )
    )
    assert error.code() == grpc.StatusCode.NOT_FOUND
