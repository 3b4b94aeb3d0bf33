"""An alias moves in the registry while traffic runs: the endpoint switches versions and no request fails."""

from __future__ import annotations

import asyncio
import struct
import uuid

import pytest
from inference import grpc_service_pb2 as oip
from tessera.serving.v1 import serving_pb2 as pb

from services.common.auth import bearer
from tests.integration.serving.conftest import ALICE, Mesh
from tests.integration.serving.topic_reader import until

pytestmark = pytest.mark.integration

CLIENTS = 4


def _request(endpoint: str) -> oip.ModelInferRequest:
    request = oip.ModelInferRequest(model_name=endpoint, id=f"alias-{uuid.uuid4().hex[:8]}")
    request.inputs.add(name="features", datatype="FP32", shape=[1, 4])
    request.inputs.add(name="category", datatype="INT64", shape=[1])
    request.raw_input_contents.extend([struct.pack("<4f", 1, 1, 1, 1), struct.pack("<q", 0)])
    return request


async def test_traffic_moves_to_the_new_version_without_a_failed_request(mesh: Mesh) -> None:
    v1, v2 = mesh.tabular_versions
    name = f"canary-{uuid.uuid4().hex[:6]}"
    await mesh.registry.set_alias(mesh.tabular_model, "candidate", v1)
    await mesh.serving_stub().CreateEndpoint(
        pb.CreateEndpointRequest(
            name=name, served_models=[pb.ServedModel(model_name=mesh.tabular_model, alias="candidate")], wait=True
        ),
        metadata=bearer(ALICE),
    )
    stub = mesh.oip_stub()
    answers: list[tuple[str, float]] = []
    failures: list[BaseException] = []
    stop = asyncio.Event()

    async def client() -> None:
        while not stop.is_set():
            try:
                response = await stub.ModelInfer(_request(name), metadata=bearer(ALICE))
                (score,) = struct.unpack("<f", response.raw_output_contents[0])
                answers.append((response.model_version, score))
            except Exception as exc:  # noqa: BLE001 - every failure is collected and fails the test
                failures.append(exc)

    clients = [asyncio.create_task(client()) for _ in range(CLIENTS)]
    try:
        async with asyncio.timeout(60):
            await until(lambda: len(answers) >= 20)
            await mesh.registry.set_alias(mesh.tabular_model, "candidate", v2)
            await until(lambda: bool(answers) and answers[-1][0] == str(v2))
            moved_at = len(answers)
            await until(lambda: len(answers) >= moved_at + 20)
    finally:
        stop.set()
        await asyncio.gather(*clients)

    assert failures == []
    # v1 scores sum(features) = 4, v2 scores twice that: each answer matches the version it names.
    assert {(version, score) for version, score in answers} == {(str(v1), 4.0), (str(v2), 8.0)}
    assert answers[-1] == (str(v2), 8.0)
    endpoint = await mesh.serving_stub().GetEndpoint(pb.GetEndpointRequest(name=name), metadata=bearer(ALICE))
    assert [(s.alias, s.version, s.state) for s in endpoint.status] == [("candidate", v2, "READY")]
    lineage = await mesh.registry.lineage_of(mesh.tabular_model, v2)
    assert ("SERVING_ENDPOINT", name) in {(n.type, n.name) for n in lineage.nodes}


async def test_an_update_loads_the_new_version_before_traffic_moves(mesh: Mesh) -> None:
    v1, v2 = mesh.tabular_versions
    stub, md, name = mesh.serving_stub(), bearer(ALICE), f"pinned-{uuid.uuid4().hex[:6]}"
    await stub.CreateEndpoint(
        pb.CreateEndpointRequest(
            name=name, served_models=[pb.ServedModel(model_name=mesh.tabular_model, version=v1)], wait=True
        ),
        metadata=md,
    )
    before = await mesh.oip_stub().ModelInfer(_request(name), metadata=md)

    updated = await stub.UpdateEndpoint(
        pb.UpdateEndpointRequest(
            name=name,
            served_models=[pb.ServedModel(model_name=mesh.tabular_model, version=v2)],
            max_concurrency=3,
            wait=True,
        ),
        metadata=md,
    )
    after = await mesh.oip_stub().ModelInfer(_request(name), metadata=md)

    assert (before.model_version, after.model_version) == (str(v1), str(v2))
    assert updated.state == "READY" and updated.max_concurrency == 3
    assert [(s.version, s.state) for s in updated.status] == [(v2, "READY")]
