"""Model versions with streamed artifacts, alias history, lineage walks, and schema deletes."""

from __future__ import annotations

import hashlib
import os

import grpc
import pytest
from tessera.registry.v1 import registry_pb2 as pb

from tests.integration.registry.conftest import as_

pytestmark = pytest.mark.integration


async def test_a_big_model_folder_moves_in_chunks_both_ways(registry, schema_of):
    s, md = registry.stub, as_("admin")
    model = f"{schema_of}.big"
    await s.CreateRegisteredModel(pb.CreateRegisteredModelRequest(full_name=model), metadata=md)
    version = await s.CreateModelVersion(pb.CreateModelVersionRequest(model_name=model), metadata=md)
    assert version.status == pb.MODEL_VERSION_STATUS_PENDING_REGISTRATION
    files = {"config.json": b"{}", "weights/part-0.bin": os.urandom(5 * 1024 * 1024 + 3), "empty.txt": b""}
    target = pb.ArtifactTarget(model_version=pb.ModelVersionRef(model_name=model, version=version.version))
    step = 1024 * 1024

    async def upload():
        yield pb.UploadArtifactsRequest(target=target)
        for path, data in files.items():
            for offset in range(0, max(len(data), 1), step):
                yield pb.UploadArtifactsRequest(
                    chunk=pb.ArtifactChunk(path=path, data=data[offset : offset + step], offset=offset)
                )

    written = await s.UploadArtifacts(upload(), metadata=md)
    assert written.files_written == 3 and written.bytes_written == sum(len(d) for d in files.values())
    ready = await s.FinalizeModelVersion(pb.FinalizeModelVersionRequest(model_name=model, version=1), metadata=md)
    assert ready.status == pb.MODEL_VERSION_STATUS_READY
    assert ready.storage_location.startswith(("file://", "s3://"))
    chunks = [
        c
        async for c in s.DownloadArtifacts(
            pb.DownloadArtifactsRequest(target=target, chunk_size=512 * 1024), metadata=md
        )
    ]
    assert max(len(c.data) for c in chunks) <= 512 * 1024
    got: dict[str, bytearray] = {}
    for c in chunks:
        buf = got.setdefault(c.path, bytearray())
        assert c.offset == len(buf) and c.file_size == len(files[c.path])
        buf.extend(c.data)
    assert {p: hashlib.sha256(b).hexdigest() for p, b in got.items()} == {
        p: hashlib.sha256(d).hexdigest() for p, d in files.items()
    }
    listed = await s.ListArtifacts(pb.ListArtifactsRequest(target=target), metadata=md)
    assert [(f.path, f.is_dir) for f in listed.files] == [
        ("config.json", False),
        ("empty.txt", False),
        ("weights", True),
    ]
    one = [
        c
        async for c in s.DownloadArtifacts(pb.DownloadArtifactsRequest(target=target, path="config.json"), metadata=md)
    ]
    assert [(c.path, c.data) for c in one] == [("config.json", b"{}")]


async def test_every_alias_move_is_kept_with_who_and_when(registry, schema_of):
    s, md = registry.stub, as_("admin")
    model = f"{schema_of}.aliased"
    await s.CreateRegisteredModel(pb.CreateRegisteredModelRequest(full_name=model), metadata=md)
    for _ in range(2):
        await s.CreateModelVersion(pb.CreateModelVersionRequest(model_name=model), metadata=md)
    for version in (1, 2, 1):
        await s.SetModelAlias(pb.SetModelAliasRequest(model_name=model, alias="champion", version=version), metadata=md)
    await s.SetModelAlias(pb.SetModelAliasRequest(model_name=model, alias="challenger", version=2), metadata=md)
    await s.DeleteModelAlias(pb.DeleteModelAliasRequest(model_name=model, alias="champion"), metadata=md)
    history = await s.ListAliasHistory(pb.ListAliasHistoryRequest(model_name=model, alias="champion"), metadata=md)
    A = pb.AliasHistoryEntry
    assert [(e.action, e.version, e.previous_version, e.actor) for e in history.entries] == [
        (A.DELETED, 0, 1, "admin"),
        (A.SET, 1, 2, "admin"),
        (A.SET, 2, 1, "admin"),
        (A.SET, 1, 0, "admin"),
    ]
    assert all(e.at.seconds > 0 for e in history.entries)
    current = await s.GetRegisteredModel(pb.GetRegisteredModelRequest(full_name=model), metadata=md)
    assert [(a.alias, a.version) for a in current.aliases] == [("challenger", 2)]
    # Deleting a version takes its aliases with it, and the history says so.
    await s.DeleteModelVersion(pb.DeleteModelVersionRequest(model_name=model, version=2), metadata=md)
    history = await s.ListAliasHistory(pb.ListAliasHistoryRequest(model_name=model), metadata=md)
    assert (history.entries[0].alias, history.entries[0].action) == ("challenger", A.DELETED)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await s.GetModelVersionByAlias(
            pb.GetModelVersionByAliasRequest(model_name=model, alias="challenger"), metadata=md
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_lineage_from_table_to_endpoint_upstream_and_downstream(registry, schema_of):
    s, md = registry.stub, as_("admin")
    model = f"{schema_of}.lin"
    exp = await s.CreateExperiment(
        pb.CreateExperimentRequest(name=f"lin-{schema_of}", schema_full_name=schema_of), metadata=md
    )
    run = (await s.CreateRun(pb.CreateRunRequest(experiment_id=exp.experiment_id), metadata=md)).info.run_id
    await s.CreateRegisteredModel(pb.CreateRegisteredModelRequest(full_name=model), metadata=md)
    await s.CreateModelVersion(
        pb.CreateModelVersionRequest(model_name=model, run_id=run), metadata=md
    )  # adds RUN -> MODEL_VERSION

    def node(kind, name):
        return pb.LineageNode(type=kind, name=name)

    table, mv, endpoint = (
        node("TABLE", f"{schema_of}.train"),
        node("MODEL_VERSION", f"{model}/1"),
        node("SERVING_ENDPOINT", "chat"),
    )
    edges = [(table, node("RUN", run)), (mv, endpoint), (table, node("VECTOR_INDEX", "docs"))]
    for src, dst in edges + edges[:1]:  # adding an edge twice is idempotent
        await s.CreateLineageEdge(
            pb.CreateLineageEdgeRequest(source=src, target=dst, properties={"by": "test"}), metadata=md
        )

    def names(reply):
        return sorted((n.type, n.name) for n in reply.nodes)

    down = await s.GetLineage(pb.GetLineageRequest(node=table, direction=pb.LINEAGE_DIRECTION_DOWNSTREAM), metadata=md)
    assert names(down) == sorted(
        [
            ("TABLE", table.name),
            ("RUN", run),
            ("MODEL_VERSION", mv.name),
            ("SERVING_ENDPOINT", "chat"),
            ("VECTOR_INDEX", "docs"),
        ]
    )
    up = await s.GetLineage(pb.GetLineageRequest(node=endpoint, direction=pb.LINEAGE_DIRECTION_UPSTREAM), metadata=md)
    assert names(up) == sorted(
        [("SERVING_ENDPOINT", "chat"), ("MODEL_VERSION", mv.name), ("RUN", run), ("TABLE", table.name)]
    )
    one_hop = await s.GetLineage(
        pb.GetLineageRequest(node=endpoint, direction=pb.LINEAGE_DIRECTION_UPSTREAM, max_depth=1), metadata=md
    )
    assert names(one_hop) == sorted([("SERVING_ENDPOINT", "chat"), ("MODEL_VERSION", mv.name)])
    # A MODEL_VERSION node must exist.
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await s.CreateLineageEdge(
            pb.CreateLineageEdgeRequest(source=node("MODEL_VERSION", f"{model}/9"), target=endpoint), metadata=md
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_deleting_a_schema_needs_cascade_when_it_holds_things(registry, schema_of):
    s, md = registry.stub, as_("admin")
    await s.CreateRegisteredModel(pb.CreateRegisteredModelRequest(full_name=f"{schema_of}.m"), metadata=md)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await s.DeleteSchema(pb.DeleteSchemaRequest(full_name=schema_of), metadata=md)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await s.DeleteSchema(pb.DeleteSchemaRequest(full_name=schema_of, cascade=True), metadata=md)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await s.GetRegisteredModel(pb.GetRegisteredModelRequest(full_name=f"{schema_of}.m"), metadata=md)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    catalog = schema_of.split(".")[0]
    await s.DeleteCatalog(pb.DeleteCatalogRequest(name=catalog), metadata=md)
    listed = await s.ListCatalogs(pb.ListCatalogsRequest(), metadata=md)
    assert catalog not in [c.name for c in listed.catalogs]


async def test_a_version_whose_source_cannot_be_copied_ends_failed_with_the_reason(registry, schema_of):
    import asyncio

    s, md = registry.stub, as_("admin")
    exp = await s.CreateExperiment(
        pb.CreateExperimentRequest(name=f"fail-{schema_of}", schema_full_name=schema_of), metadata=md
    )
    run = (await s.CreateRun(pb.CreateRunRequest(experiment_id=exp.experiment_id), metadata=md)).info.run_id
    model = f"{schema_of}.failing"
    await s.CreateRegisteredModel(pb.CreateRegisteredModelRequest(full_name=model), metadata=md)
    created = await s.CreateModelVersion(
        pb.CreateModelVersionRequest(model_name=model, source=f"runs:/{run}/no-such-folder", run_id=run), metadata=md
    )
    assert created.status == pb.MODEL_VERSION_STATUS_PENDING_REGISTRATION
    for _ in range(100):
        version = await s.GetModelVersion(pb.GetModelVersionRequest(model_name=model, version=1), metadata=md)
        if version.status != pb.MODEL_VERSION_STATUS_PENDING_REGISTRATION:
            break
        await asyncio.sleep(0.05)
    assert version.status == pb.MODEL_VERSION_STATUS_FAILED_REGISTRATION and "no-such-folder" in version.status_message


async def test_rename_keeps_versions_aliases_grants_and_lineage(registry, schema_of):
    s, md = registry.stub, as_("admin")
    old, new = f"{schema_of}.before", f"{schema_of}.after"
    await s.CreateRegisteredModel(pb.CreateRegisteredModelRequest(full_name=old, tags={"team": "a"}), metadata=md)
    await s.CreateModelVersion(pb.CreateModelVersionRequest(model_name=old), metadata=md)
    await s.SetModelAlias(pb.SetModelAliasRequest(model_name=old, alias="champion", version=1), metadata=md)
    model_type = pb.SECURABLE_TYPE_REGISTERED_MODEL
    await s.Grant(
        pb.GrantRequest(
            securable_type=model_type, securable_full_name=old, principal="bob", privileges=[pb.PRIVILEGE_EXECUTE]
        ),
        metadata=md,
    )
    endpoint = pb.LineageNode(type="SERVING_ENDPOINT", name="ep")
    await s.CreateLineageEdge(
        pb.CreateLineageEdgeRequest(source=pb.LineageNode(type="MODEL_VERSION", name=f"{old}/1"), target=endpoint),
        metadata=md,
    )
    renamed = await s.RenameRegisteredModel(
        pb.RenameRegisteredModelRequest(full_name=old, new_name="after"), metadata=md
    )
    assert (
        renamed.full_name == new
        and dict(renamed.tags) == {"team": "a"}
        and [a.alias for a in renamed.aliases] == ["champion"]
    )
    version = await s.GetModelVersionByAlias(
        pb.GetModelVersionByAliasRequest(model_name=new, alias="champion"), metadata=md
    )
    assert version.model_name == new and version.version == 1
    grants = await s.ListGrants(pb.ListGrantsRequest(securable_type=model_type, securable_full_name=new), metadata=md)
    assert [(a.principal, list(a.privileges)) for a in grants.assignments] == [("bob", [pb.PRIVILEGE_EXECUTE])]
    up = await s.GetLineage(pb.GetLineageRequest(node=endpoint, direction=pb.LINEAGE_DIRECTION_UPSTREAM), metadata=md)
    assert ("MODEL_VERSION", f"{new}/1") in [(n.type, n.name) for n in up.nodes]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await s.GetRegisteredModel(pb.GetRegisteredModelRequest(full_name=old), metadata=md)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await s.RenameRegisteredModel(
            pb.RenameRegisteredModelRequest(full_name=new, new_name="other_catalog.s.x"), metadata=md
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_ownership_moves_only_by_the_owner_or_a_superuser(registry, schema_of):
    s = registry.stub
    model = f"{schema_of}.owned"
    model_type = pb.SECURABLE_TYPE_REGISTERED_MODEL
    await s.CreateRegisteredModel(pb.CreateRegisteredModelRequest(full_name=model), metadata=as_("admin"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await s.SetOwner(
            pb.SetOwnerRequest(securable_type=model_type, securable_full_name=model, new_owner="bob"),
            metadata=as_("bob"),
        )
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    await s.SetOwner(
        pb.SetOwnerRequest(securable_type=model_type, securable_full_name=model, new_owner="alice"),
        metadata=as_("admin"),
    )
    assert (
        await s.GetRegisteredModel(pb.GetRegisteredModelRequest(full_name=model), metadata=as_("admin"))
    ).owner == "alice"
    # The new owner holds everything on the model (given the way down), e.g. MANAGE to grant.
    catalog = schema_of.split(".")[0]
    await s.Grant(
        pb.GrantRequest(
            securable_type=pb.SECURABLE_TYPE_CATALOG,
            securable_full_name=catalog,
            principal="alice",
            privileges=[pb.PRIVILEGE_USE_CATALOG, pb.PRIVILEGE_USE_SCHEMA],
        ),
        metadata=as_("admin"),
    )
    await s.Grant(
        pb.GrantRequest(
            securable_type=model_type, securable_full_name=model, principal="bob", privileges=[pb.PRIVILEGE_EXECUTE]
        ),
        metadata=as_("alice"),
    )
