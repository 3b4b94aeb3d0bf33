"""tessera.serving.v1: endpoints and Generate/GenerateStream on the real vLLM engine, models from the real registry."""

from __future__ import annotations

import grpc
import pytest
from tessera.events.v1 import serving_pb2 as events_pb
from tessera.serving.v1 import serving_pb2 as pb

from services.common.auth import bearer
from tests.integration.serving.conftest import ALICE, Mesh

pytestmark = pytest.mark.integration

GREEDY = events_pb.SamplingParams(temperature=0.0, max_tokens=16, seed=1)


async def test_the_endpoint_is_ready_and_records_lineage_in_the_registry(mesh: Mesh) -> None:
    endpoint = await mesh.serving_stub().GetEndpoint(
        pb.GetEndpointRequest(name=mesh.llm_endpoint), metadata=bearer(ALICE)
    )

    assert endpoint.state == "READY"
    assert [(s.model_name, s.version, s.runtime) for s in endpoint.status] == [(mesh.llm_model, 1, "llm")]
    lineage = await mesh.registry.lineage_of(mesh.llm_model, 1)
    assert ("SERVING_ENDPOINT", mesh.llm_endpoint) in {(n.type, n.name) for n in lineage.nodes}


async def test_generate_and_generate_stream_give_the_same_greedy_text(mesh: Mesh) -> None:
    stub = mesh.serving_stub()
    request = pb.GenerateRequest(endpoint=mesh.llm_endpoint, prompt="Return a sorted list.", sampling=GREEDY)

    whole = await stub.Generate(request, metadata=bearer(ALICE))
    chunks = [c async for c in stub.GenerateStream(request, metadata=bearer(ALICE))]

    assert whole.text and whole.completion_tokens > 0 and whole.prompt_tokens > 0
    assert (whole.served_model, whole.model_version) == (mesh.llm_model, "1")
    assert len(chunks) > 1
    assert "".join(c.text_delta for c in chunks) == whole.text
    assert chunks[-1].finish_reason == whole.finish_reason
    assert chunks[-1].completion_tokens == whole.completion_tokens


async def test_chat_messages_are_served(mesh: Mesh) -> None:
    chat = events_pb.ChatList(messages=[events_pb.ChatMessage(role="user", content="Sort a list.")])

    reply = await mesh.serving_stub().Generate(
        pb.GenerateRequest(endpoint=mesh.llm_endpoint, chat=chat, sampling=GREEDY), metadata=bearer(ALICE)
    )

    assert reply.completion_tokens > 0 and reply.finish_reason in ("stop", "length")


async def test_listing_shows_both_endpoints(mesh: Mesh) -> None:
    listed = await mesh.serving_stub().ListEndpoints(pb.ListEndpointsRequest(), metadata=bearer(ALICE))

    assert {mesh.llm_endpoint, mesh.tabular_endpoint} <= {e.name for e in listed.endpoints}


async def test_creating_an_endpoint_twice_is_already_exists(mesh: Mesh) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await mesh.serving_stub().CreateEndpoint(
            pb.CreateEndpointRequest(
                name=mesh.llm_endpoint, served_models=[pb.ServedModel(model_name=mesh.llm_model, version=1)]
            ),
            metadata=bearer(ALICE),
        )
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
