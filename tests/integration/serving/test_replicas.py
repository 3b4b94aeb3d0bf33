"""Two serving replicas on one PostgreSQL and one registry topic: a change on one is served by the other."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest
from inference import grpc_service_pb2_grpc
from tessera.serving.v1 import serving_pb2 as pb

from services.common.auth import bearer
from tests.integration.serving.conftest import ALICE, Mesh
from tests.integration.serving.support import replica, score_of, tabular_request

pytestmark = pytest.mark.integration


async def _answer(stub, endpoint: str) -> tuple[str, float] | grpc.StatusCode:
    try:
        response = await stub.ModelInfer(tabular_request(endpoint), metadata=bearer(ALICE))
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return response.model_version, score_of(response)


async def _eventually(stub, endpoint: str, expected, timeout_s: float = 60.0):
    """Ask until the answer is `expected` (the other replica applies the registry event asynchronously)."""
    answer = None
    try:
        async with asyncio.timeout(timeout_s):
            while (answer := await _answer(stub, endpoint)) != expected:  # noqa: ASYNC110 - polling another process
                await asyncio.sleep(0.1)
    except TimeoutError:
        pytest.fail(f"{endpoint}: still {answer!r}, expected {expected!r}")
    return answer


async def test_create_update_and_delete_on_one_replica_reach_the_other(mesh: Mesh) -> None:
    v1, v2 = mesh.tabular_versions
    name = f"shared-{uuid.uuid4().hex[:6]}"
    a = mesh.serving_stub()
    async with replica(mesh) as b_app, grpc.aio.insecure_channel(f"127.0.0.1:{b_app.port}") as b_channel:
        b = grpc_service_pb2_grpc.GRPCInferenceServiceStub(b_channel)
        assert await _answer(b, name) == grpc.StatusCode.NOT_FOUND

        await a.CreateEndpoint(
            pb.CreateEndpointRequest(
                name=name, served_models=[pb.ServedModel(model_name=mesh.tabular_model, version=v1)], wait=True
            ),
            metadata=bearer(ALICE),
        )
        await _eventually(b, name, (str(v1), 4.0))

        await a.UpdateEndpoint(
            pb.UpdateEndpointRequest(
                name=name, served_models=[pb.ServedModel(model_name=mesh.tabular_model, version=v2)], wait=True
            ),
            metadata=bearer(ALICE),
        )
        await _eventually(b, name, (str(v2), 8.0))
        stored = await a.GetEndpoint(pb.GetEndpointRequest(name=name), metadata=bearer(ALICE))
        assert [s.version for s in stored.served_models] == [v2]

        await a.DeleteEndpoint(pb.DeleteEndpointRequest(name=name), metadata=bearer(ALICE))
        await _eventually(b, name, grpc.StatusCode.NOT_FOUND)
        assert await _answer(mesh.oip_stub(), name) == grpc.StatusCode.NOT_FOUND
        # Not only refused by the registry: the other replica let go of the deployment and its model.
        async with asyncio.timeout(30):
            while name in b_app.endpoints._deployments:  # noqa: ASYNC110 - filled by the event follower
                await asyncio.sleep(0.05)
