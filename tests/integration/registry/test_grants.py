"""Grants are enforced on every kind of call: without the privilege PERMISSION_DENIED, and nothing changes."""

from __future__ import annotations

import dataclasses

import grpc
import pytest
from tessera.registry.v1 import registry_pb2 as pb

from tests.integration.registry.conftest import as_

pytestmark = pytest.mark.integration

CATALOG, SCHEMA, MODEL = pb.SECURABLE_TYPE_CATALOG, pb.SECURABLE_TYPE_SCHEMA, pb.SECURABLE_TYPE_REGISTERED_MODEL


async def _code(call) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err.code()
    return grpc.StatusCode.OK


@pytest.fixture
async def world(registry, schema_of):
    """admin's schema with a READY model version (alias champion) and an experiment with a run."""
    s, admin = registry.stub, as_("admin")
    model = f"{schema_of}.m"
    await s.CreateRegisteredModel(pb.CreateRegisteredModelRequest(full_name=model), metadata=admin)
    await s.CreateModelVersion(pb.CreateModelVersionRequest(model_name=model), metadata=admin)

    async def chunks():
        yield pb.UploadArtifactsRequest(
            target=pb.ArtifactTarget(model_version=pb.ModelVersionRef(model_name=model, version=1))
        )
        yield pb.UploadArtifactsRequest(chunk=pb.ArtifactChunk(path="w.bin", data=b"weights"))

    await s.UploadArtifacts(chunks(), metadata=admin)
    await s.FinalizeModelVersion(pb.FinalizeModelVersionRequest(model_name=model, version=1), metadata=admin)
    await s.SetModelAlias(pb.SetModelAliasRequest(model_name=model, alias="champion", version=1), metadata=admin)
    exp = await s.CreateExperiment(
        pb.CreateExperimentRequest(name=f"e-{schema_of}", schema_full_name=schema_of), metadata=admin
    )
    run = await s.CreateRun(pb.CreateRunRequest(experiment_id=exp.experiment_id), metadata=admin)
    return {
        "schema": schema_of,
        "catalog": schema_of.split(".")[0],
        "model": model,
        "exp": exp.experiment_id,
        "run": run.info.run_id,
    }


def _calls(s, w, who):
    """One call of every kind, as `who`; each would change or reveal something."""
    md = as_(who)
    model, run, exp = w["model"], w["run"], w["exp"]
    mv = pb.ArtifactTarget(model_version=pb.ModelVersionRef(model_name=model, version=1))

    async def upload():
        yield pb.UploadArtifactsRequest(target=pb.ArtifactTarget(run_id=run))
        yield pb.UploadArtifactsRequest(chunk=pb.ArtifactChunk(path="sneaky.txt", data=b"x"))

    async def download():
        return [c async for c in s.DownloadArtifacts(pb.DownloadArtifactsRequest(target=mv), metadata=md)]

    return {
        "get_catalog": s.GetCatalog(pb.GetCatalogRequest(name=w["catalog"]), metadata=md),
        "create_schema": s.CreateSchema(pb.CreateSchemaRequest(catalog_name=w["catalog"], name="x"), metadata=md),
        "delete_schema": s.DeleteSchema(pb.DeleteSchemaRequest(full_name=w["schema"], cascade=True), metadata=md),
        "create_model": s.CreateRegisteredModel(
            pb.CreateRegisteredModelRequest(full_name=f"{w['schema']}.new"), metadata=md
        ),
        "get_model": s.GetRegisteredModel(pb.GetRegisteredModelRequest(full_name=model), metadata=md),
        "get_version": s.GetModelVersion(pb.GetModelVersionRequest(model_name=model, version=1), metadata=md),
        "resolve_alias": s.GetModelVersionByAlias(
            pb.GetModelVersionByAliasRequest(model_name=model, alias="champion"), metadata=md
        ),
        "set_alias": s.SetModelAlias(
            pb.SetModelAliasRequest(model_name=model, alias="challenger", version=1), metadata=md
        ),
        "create_version": s.CreateModelVersion(pb.CreateModelVersionRequest(model_name=model), metadata=md),
        "delete_model": s.DeleteRegisteredModel(pb.DeleteRegisteredModelRequest(full_name=model), metadata=md),
        "download": download(),
        "create_run": s.CreateRun(pb.CreateRunRequest(experiment_id=exp), metadata=md),
        "log_batch": s.LogBatch(pb.LogBatchRequest(run_id=run, metrics=[pb.Metric(key="m", value=1)]), metadata=md),
        "get_run": s.GetRun(pb.GetRunRequest(run_id=run), metadata=md),
        "search_runs": s.SearchRuns(pb.SearchRunsRequest(experiment_ids=[exp]), metadata=md),
        "upload": s.UploadArtifacts(upload(), metadata=md),
        "lineage": s.CreateLineageEdge(
            pb.CreateLineageEdgeRequest(
                source=pb.LineageNode(type="MODEL_VERSION", name=f"{model}/1"),
                target=pb.LineageNode(type="SERVING_ENDPOINT", name="e"),
            ),
            metadata=md,
        ),
        "grant": s.Grant(
            pb.GrantRequest(
                securable_type=MODEL, securable_full_name=model, principal=who, privileges=[pb.PRIVILEGE_MANAGE]
            ),
            metadata=md,
        ),
    }


async def _state(s, w):
    admin = as_("admin")
    model = await s.GetRegisteredModel(pb.GetRegisteredModelRequest(full_name=w["model"]), metadata=admin)
    run = await s.GetRun(pb.GetRunRequest(run_id=w["run"]), metadata=admin)
    runs = await s.SearchRuns(pb.SearchRunsRequest(experiment_ids=[w["exp"]]), metadata=admin)
    files = await s.ListArtifacts(pb.ListArtifactsRequest(target=pb.ArtifactTarget(run_id=w["run"])), metadata=admin)
    grants = await s.ListGrants(
        pb.ListGrantsRequest(securable_type=MODEL, securable_full_name=w["model"]), metadata=admin
    )
    schemas = await s.ListSchemas(pb.ListSchemasRequest(catalog_name=w["catalog"]), metadata=admin)
    lineage = await s.GetLineage(
        pb.GetLineageRequest(node=pb.LineageNode(type="MODEL_VERSION", name=f"{w['model']}/1")), metadata=admin
    )
    return (
        model.latest_version,
        [(a.alias, a.version) for a in model.aliases],
        len(run.data.metrics),
        len(runs.runs),
        [f.path for f in files.files],
        list(grants.assignments),
        [x.name for x in schemas.schemas],
        len(lineage.edges),
    )


async def test_a_principal_without_privileges_is_refused_everything_and_nothing_changes(registry, world):
    before = await _state(registry.stub, world)
    codes = {name: await _code(call) for name, call in _calls(registry.stub, world, "alice").items()}
    assert codes == {name: grpc.StatusCode.PERMISSION_DENIED for name in codes}
    assert await _state(registry.stub, world) == before


async def test_privileges_inherit_downward_and_revoking_takes_them_away(registry, world):
    s, admin, alice = registry.stub, as_("admin"), as_("alice")
    grant = pb.GrantRequest(
        securable_type=CATALOG,
        securable_full_name=world["catalog"],
        principal="alice",
        privileges=[pb.PRIVILEGE_USE_CATALOG, pb.PRIVILEGE_USE_SCHEMA, pb.PRIVILEGE_EXECUTE],
    )
    await s.Grant(grant, metadata=admin)
    # EXECUTE on the catalog reaches the model and the experiment beneath it: reads work, writes do not.
    version = await s.GetModelVersionByAlias(
        pb.GetModelVersionByAliasRequest(model_name=world["model"], alias="champion"), metadata=alice
    )
    assert version.version == 1
    await s.GetRun(pb.GetRunRequest(run_id=world["run"]), metadata=alice)
    set_alias = pb.SetModelAliasRequest(model_name=world["model"], alias="challenger", version=1)
    assert await _code(s.SetModelAlias(set_alias, metadata=alice)) == grpc.StatusCode.PERMISSION_DENIED
    # MODIFY on the schema (inherited by the model) lets her move aliases and log metrics.
    await s.Grant(
        pb.GrantRequest(
            securable_type=SCHEMA,
            securable_full_name=world["schema"],
            principal="alice",
            privileges=[pb.PRIVILEGE_MODIFY],
        ),
        metadata=admin,
    )
    await s.SetModelAlias(set_alias, metadata=alice)
    await s.LogBatch(pb.LogBatchRequest(run_id=world["run"], metrics=[pb.Metric(key="m", value=1)]), metadata=alice)
    # ...but not grant (MANAGE) nor delete.
    assert (
        await _code(s.DeleteRegisteredModel(pb.DeleteRegisteredModelRequest(full_name=world["model"]), metadata=alice))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    await s.Revoke(
        pb.RevokeRequest(
            securable_type=SCHEMA,
            securable_full_name=world["schema"],
            principal="alice",
            privileges=[pb.PRIVILEGE_MODIFY],
        ),
        metadata=admin,
    )
    assert await _code(s.SetModelAlias(set_alias, metadata=alice)) == grpc.StatusCode.PERMISSION_DENIED


async def test_owners_hold_everything_on_what_they_create(registry, world):
    s, admin, alice, bob = registry.stub, as_("admin"), as_("alice"), as_("bob")
    await s.Grant(
        pb.GrantRequest(
            securable_type=SCHEMA,
            securable_full_name=world["schema"],
            principal="alice",
            privileges=[pb.PRIVILEGE_USE_SCHEMA, pb.PRIVILEGE_CREATE_MODEL],
        ),
        metadata=admin,
    )
    await s.Grant(
        pb.GrantRequest(
            securable_type=CATALOG,
            securable_full_name=world["catalog"],
            principal="alice",
            privileges=[pb.PRIVILEGE_USE_CATALOG],
        ),
        metadata=admin,
    )
    mine = f"{world['schema']}.alices"
    created = await s.CreateRegisteredModel(pb.CreateRegisteredModelRequest(full_name=mine), metadata=alice)
    assert created.owner == "alice"
    await s.CreateModelVersion(pb.CreateModelVersionRequest(model_name=mine), metadata=alice)
    # As owner she may grant bob EXECUTE on her model (bob also needs to reach the schema).
    await s.Grant(
        pb.GrantRequest(
            securable_type=MODEL, securable_full_name=mine, principal="bob", privileges=[pb.PRIVILEGE_EXECUTE]
        ),
        metadata=alice,
    )
    assert (
        await _code(s.GetModelVersion(pb.GetModelVersionRequest(model_name=mine, version=1), metadata=bob))
        == grpc.StatusCode.PERMISSION_DENIED
    )
    await s.Grant(
        pb.GrantRequest(
            securable_type=CATALOG,
            securable_full_name=world["catalog"],
            principal="bob",
            privileges=[pb.PRIVILEGE_USE_CATALOG, pb.PRIVILEGE_USE_SCHEMA],
        ),
        metadata=admin,
    )
    await s.GetModelVersion(pb.GetModelVersionRequest(model_name=mine, version=1), metadata=bob)
    # Other models in the schema stay closed to bob.
    assert (
        await _code(s.GetRegisteredModel(pb.GetRegisteredModelRequest(full_name=world["model"]), metadata=bob))
        == grpc.StatusCode.PERMISSION_DENIED
    )


async def test_check_privilege_for_another_principal_is_for_service_principals_only(registry, world):
    s = registry.stub
    ask = pb.CheckPrivilegeRequest(
        principal="alice", securable_type=MODEL, securable_full_name=world["model"], privilege=pb.PRIVILEGE_EXECUTE
    )
    denied = await s.CheckPrivilege(ask, metadata=as_("serving-svc"))
    assert not denied.allowed and "alice" in denied.reason
    await s.Grant(
        pb.GrantRequest(
            securable_type=CATALOG,
            securable_full_name=world["catalog"],
            principal="alice",
            privileges=[pb.PRIVILEGE_USE_CATALOG, pb.PRIVILEGE_USE_SCHEMA, pb.PRIVILEGE_EXECUTE],
        ),
        metadata=as_("admin"),
    )
    assert (await s.CheckPrivilege(ask, metadata=as_("serving-svc"))).allowed
    assert (await s.CheckPrivilege(ask, metadata=as_("alice"))).allowed  # asking about oneself is fine
    assert await _code(s.CheckPrivilege(ask, metadata=as_("bob"))) == grpc.StatusCode.PERMISSION_DENIED
    modify = pb.CheckPrivilegeRequest(
        principal="alice", securable_type=SCHEMA, securable_full_name=world["schema"], privilege=pb.PRIVILEGE_MODIFY
    )
    assert not (await s.CheckPrivilege(modify, metadata=as_("serving-svc"))).allowed
    missing = pb.CheckPrivilegeRequest(
        principal="alice",
        securable_type=MODEL,
        securable_full_name=f"{world['schema']}.nope",
        privilege=pb.PRIVILEGE_EXECUTE,
    )
    assert await _code(s.CheckPrivilege(missing, metadata=as_("serving-svc"))) == grpc.StatusCode.NOT_FOUND


async def test_the_mlflow_api_enforces_the_same_grants(registry, world):
    import aiohttp

    url = f"{registry.http_url}/api/2.0/mlflow/runs/log-batch"
    body = {"run_id": world["run"], "metrics": [{"key": "m", "value": 1, "step": 0, "timestamp": 1}]}
    async with aiohttp.ClientSession() as http:
        async with http.post(url, json=body, headers={"Authorization": "Bearer tok-bob"}) as reply:
            assert reply.status == 403 and (await reply.json())["error_code"] == "PERMISSION_DENIED"
        async with http.post(url, json=body) as reply:
            assert reply.status == 401 and (await reply.json())["error_code"] == "UNAUTHENTICATED"
        art = f"{registry.http_url}/api/2.0/mlflow-artifacts/artifacts/{world['exp']}/{world['run']}/artifacts/x.txt"
        async with http.put(art, data=b"x", headers={"Authorization": "Bearer tok-bob"}) as reply:
            assert reply.status == 403
    run = await registry.stub.GetRun(pb.GetRunRequest(run_id=world["run"]), metadata=as_("admin"))
    assert len(run.data.metrics) == 0


async def test_grants_on_an_experiment_cover_its_runs(registry, world):
    s, admin, alice = registry.stub, as_("admin"), as_("alice")
    reach = pb.GrantRequest(
        securable_type=CATALOG,
        securable_full_name=world["catalog"],
        principal="alice",
        privileges=[pb.PRIVILEGE_USE_CATALOG, pb.PRIVILEGE_USE_SCHEMA],
    )
    await s.Grant(reach, metadata=admin)
    experiment = pb.SECURABLE_TYPE_EXPERIMENT
    await s.Grant(
        pb.GrantRequest(
            securable_type=experiment,
            securable_full_name=world["exp"],
            principal="alice",
            privileges=[pb.PRIVILEGE_EXECUTE],
        ),
        metadata=admin,
    )
    await s.GetRun(pb.GetRunRequest(run_id=world["run"]), metadata=alice)
    found = await s.SearchExperiments(pb.SearchExperimentsRequest(), metadata=alice)
    ids = [e.experiment_id for e in found.experiments]
    assert world["exp"] in ids and "0" not in ids  # only what she may read: not admin's Default experiment
    log = pb.LogBatchRequest(run_id=world["run"], metrics=[pb.Metric(key="m", value=1)])
    assert await _code(s.LogBatch(log, metadata=alice)) == grpc.StatusCode.PERMISSION_DENIED
    await s.Grant(
        pb.GrantRequest(
            securable_type=experiment,
            securable_full_name=world["exp"],
            principal="alice",
            privileges=[pb.PRIVILEGE_MODIFY],
        ),
        metadata=admin,
    )
    await s.LogBatch(log, metadata=alice)
    listed = await s.ListGrants(
        pb.ListGrantsRequest(securable_type=experiment, securable_full_name=world["exp"]), metadata=admin
    )
    assert [(a.principal, sorted(a.privileges)) for a in listed.assignments] == [
        ("alice", sorted([pb.PRIVILEGE_EXECUTE, pb.PRIVILEGE_MODIFY]))
    ]
    assert listed.owner == "admin"


async def test_a_service_principal_reads_models_links_lineage_and_does_nothing_else(registry, world):
    s, model = registry.stub, world["model"]
    before = await _state(s, world)
    codes = {name: await _code(call) for name, call in _calls(s, world, "serving-svc").items()}
    # What serving needs to load and serve a model version, and to record which endpoint serves it.
    readable = {"get_model", "get_version", "resolve_alias", "download", "lineage"}
    assert {name for name, code in codes.items() if code == grpc.StatusCode.OK} == readable
    assert {code for name, code in codes.items() if name not in readable} == {grpc.StatusCode.PERMISSION_DENIED}
    after = await _state(s, world)
    assert after[:-1] == before[:-1] and after[-1] == before[-1] + 1  # only the lineage edge was added
    listed = await s.ListArtifacts(
        pb.ListArtifactsRequest(
            target=pb.ArtifactTarget(model_version=pb.ModelVersionRef(model_name=model, version=1))
        ),
        metadata=as_("serving-svc"),
    )
    assert [f.path for f in listed.files] == ["w.bin"]
    # Grants to a service principal do not widen its role.
    await s.Grant(
        pb.GrantRequest(
            securable_type=CATALOG,
            securable_full_name=world["catalog"],
            principal="serving-svc",
            privileges=[pb.PRIVILEGE_MANAGE],
        ),
        metadata=as_("admin"),
    )
    delete = s.DeleteRegisteredModel(pb.DeleteRegisteredModelRequest(full_name=model), metadata=as_("serving-svc"))
    assert await _code(delete) == grpc.StatusCode.PERMISSION_DENIED
    create = pb.CreateCatalogRequest(name="svc_catalog")
    assert await _code(s.CreateCatalog(create, metadata=as_("serving-svc"))) == grpc.StatusCode.PERMISSION_DENIED


async def test_local_paths_are_refused_to_everyone_unless_turned_on(registry, world, tmp_path):
    (tmp_path / "secret.txt").write_text("host file")
    steal = pb.CreateModelVersionRequest(model_name=world["model"], source=str(tmp_path))
    core = registry.registry.ctx
    turned_on = core.settings
    core.settings = dataclasses.replace(turned_on, registry_allow_local_sources=False)
    try:
        code = await _code(registry.stub.CreateModelVersion(steal, metadata=as_("admin")))
    finally:
        core.settings = turned_on
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_only_superusers_register_local_paths_from_the_registry_host(registry, world, tmp_path):
    s = registry.stub
    await s.Grant(
        pb.GrantRequest(
            securable_type=CATALOG,
            securable_full_name=world["catalog"],
            principal="alice",
            privileges=[pb.PRIVILEGE_USE_CATALOG, pb.PRIVILEGE_USE_SCHEMA, pb.PRIVILEGE_MODIFY],
        ),
        metadata=as_("admin"),
    )
    (tmp_path / "secret.txt").write_text("host file")
    steal = pb.CreateModelVersionRequest(model_name=world["model"], source=str(tmp_path))
    assert await _code(s.CreateModelVersion(steal, metadata=as_("alice"))) == grpc.StatusCode.PERMISSION_DENIED
    model = await s.GetRegisteredModel(pb.GetRegisteredModelRequest(full_name=world["model"]), metadata=as_("admin"))
    assert model.latest_version == 1  # nothing was created
    created = await s.CreateModelVersion(steal, metadata=as_("admin"))
    assert created.version == 2
