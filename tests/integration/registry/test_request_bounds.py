"""Requests that are cheap to ask and expensive to answer are bounded before any work (review #23)."""

from __future__ import annotations

import grpc
import pytest
from tessera.registry.v1 import registry_pb2 as pb

from tests.integration.registry.conftest import as_

pytestmark = pytest.mark.integration


async def _code(call) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


async def test_search_runs_takes_a_bounded_number_of_experiments(registry):
    many = [str(i) for i in range(registry.settings.registry_max_search_experiments + 1)]
    search = registry.stub.SearchRuns(pb.SearchRunsRequest(experiment_ids=many), metadata=as_("admin"))
    assert await _code(search) == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_huge_chunk_size_is_served_in_bounded_chunks(registry, schema_of):
    s, md = registry.stub, as_("admin")
    model = f"{schema_of}.big"
    await s.CreateRegisteredModel(pb.CreateRegisteredModelRequest(full_name=model), metadata=md)
    await s.CreateModelVersion(pb.CreateModelVersionRequest(model_name=model), metadata=md)
    target = pb.ArtifactTarget(model_version=pb.ModelVersionRef(model_name=model, version=1))
    limit = registry.settings.registry_max_chunk_size
    data = b"x" * (limit + 10)

    async def upload():
        yield pb.UploadArtifactsRequest(target=target)
        for offset in range(0, len(data), 1 << 20):
            yield pb.UploadArtifactsRequest(
                chunk=pb.ArtifactChunk(path="w.bin", data=data[offset : offset + (1 << 20)], offset=offset)
            )

    await s.UploadArtifacts(upload(), metadata=md)
    chunks = [
        c
        async for c in s.DownloadArtifacts(
            pb.DownloadArtifactsRequest(target=target, chunk_size=2**31 - 1), metadata=md
        )
    ]
    assert [len(c.data) for c in chunks] == [limit, 10]


async def test_a_version_links_only_to_a_run_its_creator_may_read(registry, schema_of):
    s, admin = registry.stub, as_("admin")
    model = f"{schema_of}.linked"
    await s.CreateRegisteredModel(pb.CreateRegisteredModelRequest(full_name=model), metadata=admin)
    await s.Grant(
        pb.GrantRequest(
            securable_type=pb.SECURABLE_TYPE_REGISTERED_MODEL,
            securable_full_name=model,
            principal="alice",
            privileges=[pb.PRIVILEGE_MODIFY],
        ),
        metadata=admin,
    )
    await s.Grant(
        pb.GrantRequest(
            securable_type=pb.SECURABLE_TYPE_CATALOG,
            securable_full_name=schema_of.split(".")[0],
            principal="alice",
            privileges=[pb.PRIVILEGE_USE_CATALOG, pb.PRIVILEGE_USE_SCHEMA],
        ),
        metadata=admin,
    )
    other = f"o{schema_of.split('.')[0]}"
    await s.CreateCatalog(pb.CreateCatalogRequest(name=other), metadata=admin)
    await s.CreateSchema(pb.CreateSchemaRequest(catalog_name=other, name="s"), metadata=admin)
    exp = await s.CreateExperiment(
        pb.CreateExperimentRequest(name=f"hidden-{other}", schema_full_name=f"{other}.s"), metadata=admin
    )
    run = (await s.CreateRun(pb.CreateRunRequest(experiment_id=exp.experiment_id), metadata=admin)).info.run_id
    link = pb.CreateModelVersionRequest(model_name=model, run_id=run)
    assert await _code(s.CreateModelVersion(link, metadata=as_("alice"))) == grpc.StatusCode.PERMISSION_DENIED
    assert (
        await s.CreateModelVersion(pb.CreateModelVersionRequest(model_name=model), metadata=as_("alice"))
    ).version == 1
    missing = pb.CreateModelVersionRequest(model_name=model, run_id="no-such-run")
    assert await _code(s.CreateModelVersion(missing, metadata=admin)) == grpc.StatusCode.NOT_FOUND
