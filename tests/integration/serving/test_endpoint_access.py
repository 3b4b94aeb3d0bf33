"""Endpoints are registry securables: the owner manages, EXECUTE calls, any privilege shows; bounds come first."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from inference import grpc_service_pb2 as oip
from tessera.common.v1 import common_pb2
from tessera.events.v1 import serving_pb2 as events_pb
from tessera.registry.v1 import registry_pb2 as rpb
from tessera.serving.v1 import serving_pb2 as pb

from services.common.auth import bearer
from tests.integration.serving.conftest import ALICE, BOB, Mesh
from tests.integration.serving.support import error_of, tabular_request

pytestmark = pytest.mark.integration


async def _alices_endpoint(mesh: Mesh, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    await mesh.serving_stub().CreateEndpoint(
        pb.CreateEndpointRequest(
            name=name,
            served_models=[pb.ServedModel(model_name=mesh.tabular_model, version=mesh.tabular_versions[0])],
            wait=True,
        ),
        metadata=bearer(ALICE),
    )
    return name


async def test_another_principal_cannot_repoint_delete_or_see_an_endpoint(mesh: Mesh) -> None:
    stub, name = mesh.serving_stub(), await _alices_endpoint(mesh, "owned")
    # bob may use the model, so only the endpoint's owner rule stops him.
    await mesh.registry.grant(rpb.SECURABLE_TYPE_REGISTERED_MODEL, mesh.tabular_model, "bob", [rpb.PRIVILEGE_EXECUTE])
    hijack = pb.UpdateEndpointRequest(
        name=name, served_models=[pb.ServedModel(model_name=mesh.tabular_model, version=mesh.tabular_versions[1])]
    )

    update = await error_of(stub.UpdateEndpoint(hijack, metadata=bearer(BOB)))
    delete = await error_of(stub.DeleteEndpoint(pb.DeleteEndpointRequest(name=name), metadata=bearer(BOB)))
    get = await error_of(stub.GetEndpoint(pb.GetEndpointRequest(name=name), metadata=bearer(BOB)))
    ready = await error_of(mesh.oip_stub().ModelReady(oip.ModelReadyRequest(name=name), metadata=bearer(BOB)))
    metadata = await error_of(mesh.oip_stub().ModelMetadata(oip.ModelMetadataRequest(name=name), metadata=bearer(BOB)))
    listed = await stub.ListEndpoints(pb.ListEndpointsRequest(), metadata=bearer(BOB))

    assert (update.code(), delete.code()) == (grpc.StatusCode.PERMISSION_DENIED,) * 2
    assert "MANAGE" in update.details()
    assert (get.code(), ready.code()) == (grpc.StatusCode.NOT_FOUND,) * 2
    assert metadata.code() == grpc.StatusCode.PERMISSION_DENIED
    assert name not in {e.name for e in listed.endpoints}
    kept = await stub.GetEndpoint(pb.GetEndpointRequest(name=name), metadata=bearer(ALICE))
    assert [s.version for s in kept.served_models] == [mesh.tabular_versions[0]]


async def test_a_refused_call_logs_no_inputs_and_a_grant_lets_the_caller_in(mesh: Mesh) -> None:
    name = await _alices_endpoint(mesh, "guarded")
    refused_id = f"refused-{uuid.uuid4().hex[:6]}"

    refused = await error_of(
        mesh.oip_stub().ModelInfer(tabular_request(name, refused_id, ones=1e6), metadata=bearer(BOB))
    )
    [record] = (await mesh.payloads.wait_for([refused_id]))[refused_id]

    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED and "EXECUTE" in refused.details()
    assert (record.status, record.principal) == ("PERMISSION_DENIED", "bob")
    assert len(record.inputs) == 0 and len(record.outputs) == 0

    # The grant event drops serving's cached denial: bob gets in without waiting for it to expire.
    await mesh.registry.grant(rpb.SECURABLE_TYPE_ENDPOINT, name, "bob", [rpb.PRIVILEGE_EXECUTE])
    async with asyncio.timeout(30):
        while True:
            try:
                await mesh.oip_stub().ModelInfer(tabular_request(name), metadata=bearer(BOB))
                break
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.PERMISSION_DENIED
                await asyncio.sleep(0.1)
    shown = await mesh.serving_stub().GetEndpoint(pb.GetEndpointRequest(name=name), metadata=bearer(BOB))
    assert shown.name == name


async def test_a_page_is_not_cut_short_by_endpoints_the_caller_cannot_see(mesh: Mesh) -> None:
    names = sorted([await _alices_endpoint(mesh, f"page{i}") for i in range(3)])
    await mesh.registry.grant(rpb.SECURABLE_TYPE_ENDPOINT, names[-1], "bob", [rpb.PRIVILEGE_SELECT])

    seen, token = [], ""
    async with asyncio.timeout(60):
        while True:
            page = await mesh.serving_stub().ListEndpoints(
                pb.ListEndpointsRequest(page=_page(1, token)), metadata=bearer(BOB)
            )
            seen += [e.name for e in page.endpoints]
            token = page.page.next_page_token
            if not token:
                break

    assert names[-1] in seen and not set(names[:-1]) & set(seen)


def _page(size: int, token: str) -> common_pb2.PageRequest:
    return common_pb2.PageRequest(page_size=size, page_token=token)


async def test_a_huge_request_id_is_invalid_argument_on_every_front_end(mesh: Mesh) -> None:
    huge = "r" * 12_000

    generate = await error_of(
        mesh.serving_stub().Generate(
            pb.GenerateRequest(endpoint=mesh.llm_endpoint, prompt="hi", request_id=huge), metadata=bearer(ALICE)
        )
    )
    infer = await error_of(
        mesh.oip_stub().ModelInfer(tabular_request(mesh.tabular_endpoint, huge), metadata=bearer(ALICE))
    )
    kafka_id = "k" * 129
    await mesh.send_request(
        events_pb.InferenceRequest(
            request_id=kafka_id,
            endpoint=mesh.llm_endpoint,
            prompt="hi",
            auth_token=ALICE,
            reply_to=mesh.responses_topic,
        )
    )
    [response] = (await mesh.responses.wait_for([kafka_id]))[kafka_id]

    assert generate.code() == infer.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request ids" in generate.details()
    assert response.status == "INVALID_ARGUMENT"


async def test_names_with_a_trailing_newline_or_out_of_bounds_are_invalid_argument(mesh: Mesh) -> None:
    stub, model = mesh.serving_stub(), pb.ServedModel(model_name=mesh.tabular_model, version=1)

    newline = await error_of(
        stub.CreateEndpoint(pb.CreateEndpointRequest(name="trailing\n", served_models=[model]), metadata=bearer(ALICE))
    )
    long_model = await error_of(
        stub.CreateEndpoint(
            pb.CreateEndpointRequest(name="fine", served_models=[pb.ServedModel(model_name="m" * 5000, version=1)]),
            metadata=bearer(ALICE),
        )
    )
    long_get = await error_of(stub.GetEndpoint(pb.GetEndpointRequest(name="e" * 5000), metadata=bearer(ALICE)))

    assert newline.code() == long_model.code() == long_get.code() == grpc.StatusCode.INVALID_ARGUMENT
