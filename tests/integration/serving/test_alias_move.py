"""Alias moves and re-created models: traffic follows the registry's READY versions, never a stale cache."""

from __future__ import annotations

import asyncio
import dataclasses
import struct
import uuid

import pytest
from inference import grpc_service_pb2 as oip
from tessera.events.v1 import registry_pb2 as registry_events_pb
from tessera.registry.v1 import registry_pb2 as rpb
from tessera.serving.v1 import serving_pb2 as pb

from services.common.auth import bearer
from services.common.errors import FailedPrecondition
from services.fixtures.tabular import build_tabular_model
from services.serving.registry_catalog import RegistryCatalog
from tests.integration.serving.conftest import ALICE, SERVICE, Mesh
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


async def test_an_alias_event_is_checked_with_the_registry_and_a_version_not_ready_is_not_loaded(mesh: Mesh) -> None:
    v1, _v2 = mesh.tabular_versions
    name = f"watched-{uuid.uuid4().hex[:6]}"
    await mesh.registry.set_alias(mesh.tabular_model, "watched", v1)
    await mesh.serving_stub().CreateEndpoint(
        pb.CreateEndpointRequest(
            name=name, served_models=[pb.ServedModel(model_name=mesh.tabular_model, alias="watched")], wait=True
        ),
        metadata=bearer(ALICE),
    )
    # A version still waiting for its files, and an event claiming the alias moved there (it did not).
    pending = await mesh.registry.stub.CreateModelVersion(
        rpb.CreateModelVersionRequest(model_name=mesh.tabular_model), metadata=mesh.registry.md
    )
    forged = registry_events_pb.RegistryEvent(
        type=registry_events_pb.RegistryEvent.ALIAS_SET,
        event_id=f"forged-{uuid.uuid4().hex[:6]}",
        model_name=mesh.tabular_model,
        alias="watched",
        version=pending.version,
    )
    await mesh.producer.send(mesh.registry_topic, forged, key=mesh.tabular_model)
    # A real move of another alias, after the forged event on the same partition: once it shows, both were handled.
    marker = f"marker-{uuid.uuid4().hex[:6]}"
    await mesh.registry.set_alias(mesh.tabular_model, "candidate", v1)
    await mesh.serving_stub().CreateEndpoint(
        pb.CreateEndpointRequest(
            name=marker, served_models=[pb.ServedModel(model_name=mesh.tabular_model, alias="candidate")], wait=True
        ),
        metadata=bearer(ALICE),
    )
    await mesh.registry.set_alias(mesh.tabular_model, "candidate", mesh.tabular_versions[1])
    moved = str(mesh.tabular_versions[1])
    async with asyncio.timeout(60):
        while (await mesh.oip_stub().ModelInfer(_request(marker), metadata=bearer(ALICE))).model_version != moved:  # noqa: ASYNC110 - polling the service
            await asyncio.sleep(0.1)

    answer = await mesh.oip_stub().ModelInfer(_request(name), metadata=bearer(ALICE))
    assert answer.model_version == str(v1)
    endpoint = await mesh.serving_stub().GetEndpoint(pb.GetEndpointRequest(name=name), metadata=bearer(ALICE))
    assert [(s.version, s.state) for s in endpoint.status] == [(v1, "READY")]


async def test_a_model_recreated_under_the_same_name_serves_its_new_files(mesh: Mesh, tmp_path) -> None:
    model = f"{mesh.tabular_model}_again"
    md, stub = bearer(ALICE), mesh.serving_stub()

    async def serve(weight: float, endpoint: str) -> str:
        version = await mesh.registry.register(model, build_tabular_model(tmp_path / str(weight), weight))
        await mesh.registry.grant(rpb.SECURABLE_TYPE_REGISTERED_MODEL, model, "alice", [rpb.PRIVILEGE_EXECUTE])
        await stub.CreateEndpoint(
            pb.CreateEndpointRequest(
                name=endpoint, served_models=[pb.ServedModel(model_name=model, version=version)], wait=True
            ),
            metadata=md,
        )
        return endpoint

    first = await serve(1.0, f"first-{uuid.uuid4().hex[:6]}")
    await mesh.registry.stub.DeleteRegisteredModel(
        rpb.DeleteRegisteredModelRequest(full_name=model), metadata=mesh.registry.md
    )
    second = await serve(3.0, f"second-{uuid.uuid4().hex[:6]}")

    old = await mesh.oip_stub().ModelInfer(_request(first), metadata=md)
    new = await mesh.oip_stub().ModelInfer(_request(second), metadata=md)
    assert (old.model_version, new.model_version) == ("1", "1")
    assert struct.unpack("<f", old.raw_output_contents[0]) == (4.0,)
    assert struct.unpack("<f", new.raw_output_contents[0]) == (12.0,)


async def test_a_version_that_changes_during_its_download_is_not_cached(mesh: Mesh, tmp_path) -> None:
    catalog = RegistryCatalog(mesh.registry_address, SERVICE, tmp_path / "cache")
    try:
        current = await catalog.resolve(mesh.tabular_model, mesh.tabular_versions[0], None)
        # What serving asked for is not what the registry holds once the files are in: a re-created version.
        stale = dataclasses.replace(current, content_id="0" * 32)

        with pytest.raises(FailedPrecondition, match="changed while it was downloaded"):
            await catalog.fetch(stale)
        fetched = await catalog.fetch(current)
    finally:
        await catalog.close()

    assert [p.name for p in (tmp_path / "cache").iterdir()] == [current.content_id]
    assert (fetched / "model.pt").is_file()
