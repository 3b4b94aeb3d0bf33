"""Authorization matrix: every RPC of every service, called by a principal with no grants.

`admin` creates one of everything (a catalog, schema, registered model with a
TorchScript version and an alias, an experiment with a run, a lineage edge, a
serving endpoint, a retrieval index with a document, a monitor), then
`mallory`, who holds no grant at all, calls every RPC against those objects.

`ROWS` maps each full method name to a request builder and the outcome expected
for mallory:
- `DENIED`: PERMISSION_DENIED;
- `Filtered(...)`: the call answers (or is denied outright) and none of
  admin's objects appear in the answer;
- `OPEN`: answers any authenticated caller and names no object (server
  liveness and metadata);
- `PUBLIC`: answers without credentials (health);
- `UNIMPLEMENTED`: the service does not implement this RPC of its protocol.

The RPCs are enumerated from the running servers (server reflection lists the
services, the protobuf descriptors list their methods), so an RPC added to a
service without a row here fails `test_every_rpc_has_a_row`.

The MLflow REST routes get a smaller table of their own (`REST_ROWS`).
One attack needs mallory to hold something: re-pointing admin's endpoint to
a model she owns (`test_an_endpoint_cannot_be_repointed_to_the_callers_own_model`).

The authorization model is the one decided for the hardening work: endpoints
and monitors are securables of their own (EXECUTE calls an endpoint, MANAGE
changes it, SELECT reads its logged requests; SELECT reads a monitor, MANAGE
changes it), retrieval needs USE_SCHEMA to read and MODIFY to write, the
registry's Register/Touch/UnregisterSecurable are reserved to service
principals, and GetLineage hides nodes the caller may not read.
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import pytest
import pytest_asyncio
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from inference import grpc_service_pb2 as oip
from tessera.monitoring.v1 import monitoring_pb2 as mpb
from tessera.registry.v1 import registry_pb2 as rpb
from tessera.retrieval.v1 import retrieval_pb2 as qpb
from tessera.serving.v1 import serving_pb2 as spb

from services.fixtures.registry_client import RegistryClient
from services.fixtures.tabular import build_tabular_model
from tests.integration.mesh_support import TOKENS, Mesh, as_, eventually, running_mesh, tabular_request

pytestmark = pytest.mark.integration

# Services every server carries for tooling; health has rows of its own, reflection names no object.
TOOLING = {"grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"}


@dataclass
class World:
    """What admin created; every row's request points at these."""

    mesh: Mesh
    catalog: str
    schema: str
    model: str
    version: int
    alias: str
    experiment_id: str
    experiment_name: str
    run_id: str
    lineage_table: str
    endpoint: str
    index: str
    monitor_id: str


@pytest_asyncio.fixture(scope="module")
async def world(pg_dsn: str, kafka_bootstrap: str, tmp_path_factory) -> World:
    async with running_mesh(pg_dsn, kafka_bootstrap, registry_http=True) as mesh:
        u = uuid.uuid4().hex[:8]
        catalog, schema = f"authz{u}", f"authz{u}.s"
        model = f"{schema}.scorer"
        admin = mesh.admin
        await admin.ensure_schema(catalog, "s")
        version = await admin.register(model, build_tabular_model(tmp_path_factory.mktemp("model"), 1.0))
        await admin.set_alias(model, "champion", version)
        await mesh.grant_service_reads(catalog, schema, model)

        reg = mesh.registry_stub()
        md = as_("admin")
        experiment = await reg.CreateExperiment(
            rpb.CreateExperimentRequest(name=f"authz-exp-{u}", schema_full_name=schema), metadata=md
        )
        run = await reg.CreateRun(rpb.CreateRunRequest(experiment_id=experiment.experiment_id), metadata=md)
        await reg.LogBatch(
            rpb.LogBatchRequest(
                run_id=run.info.run_id,
                metrics=[rpb.Metric(key="loss", value=0.5, step=0, timestamp_ms=1)],
                tags=[rpb.RunTag(key="team", value="admin")],
            ),
            metadata=md,
        )
        lineage_table = f"warehouse.features_{u}"
        await reg.CreateLineageEdge(
            rpb.CreateLineageEdgeRequest(
                source=rpb.LineageNode(type="TABLE", name=lineage_table),
                target=rpb.LineageNode(type="MODEL_VERSION", name=f"{model}/{version}"),
            ),
            metadata=md,
        )

        endpoint = f"authz-ep-{u}"
        created = await mesh.serving_stub().CreateEndpoint(
            spb.CreateEndpointRequest(
                name=endpoint, served_models=[spb.ServedModel(model_name=model, alias="champion")], wait=True
            ),
            metadata=md,
        )
        assert created.state == "READY", created
        await mesh.oip_stub().ModelInfer(tabular_request(endpoint, f"authz-{u}"), metadata=md)

        index = f"{catalog}.s.docs"
        retrieval = mesh.retrieval_stub()
        await retrieval.CreateIndex(qpb.CreateIndexRequest(name=index, dimension=3), metadata=md)
        await retrieval.UpsertDocuments(
            qpb.UpsertDocumentsRequest(index=index, documents=[qpb.Document(id="secret", version=1, vector=[1, 0, 0])]),
            metadata=md,
        )

        monitor = mpb.Monitor(endpoint=endpoint, window_seconds=60, features=[mpb.FeatureSpec(path="latency_ms")])
        monitor.baseline.reference.values.add(feature="latency_ms", numbers=[1.0, 2.0, 3.0])
        monitor_id = (
            await mesh.monitoring_stub().CreateMonitor(mpb.CreateMonitorRequest(monitor=monitor), metadata=md)
        ).monitor_id

        # The admin's call above is in the inference table, so "absent for mallory" means something.
        async def logged():
            reply = await mesh.monitoring_stub().ListInferenceRecords(
                mpb.ListInferenceRecordsRequest(endpoint=endpoint), metadata=md
            )
            return list(reply.records)

        assert await eventually(logged)
        yield World(
            mesh,
            catalog,
            schema,
            model,
            version,
            "champion",
            experiment.experiment_id,
            experiment.name,
            run.info.run_id,
            lineage_table,
            endpoint,
            index,
            monitor_id,
        )


# -- outcomes ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    kind: str
    # For Filtered: names of admin's objects found in the answer (must be empty).
    leaks: Callable[[World, list], list] | None = None
    # For Filtered: whether PERMISSION_DENIED is an acceptable answer too (a list scoped to one of admin's objects).
    may_deny: bool = False


DENIED = Outcome("denied")
# Refused by hiding: the object does not exist for the caller (NOT_FOUND), or PERMISSION_DENIED.
HIDDEN = Outcome("hidden")
OPEN = Outcome("open")
PUBLIC = Outcome("public")
UNIMPLEMENTED = Outcome("unimplemented")


def Filtered(leaks: Callable[[World, list], list], *, may_deny: bool = False) -> Outcome:  # noqa: N802 - reads as a row value
    return Outcome("filtered", leaks, may_deny)


def _names_in(responses: list, *secrets: str) -> list[str]:
    """Which of `secrets` appear anywhere in the answers' text form (names, ids, tensors...)."""
    text = "\n".join(str(r) for r in responses)
    return [s for s in secrets if s and s in text]


def admin_objects(w: World, responses: list) -> list[str]:
    return _names_in(
        # Not the experiment id: it is a small integer that any answer may contain by chance.
        responses,
        w.catalog,
        w.model,
        w.experiment_name,
        w.run_id,
        w.endpoint,
        w.index,
        w.monitor_id,
    )


def leaked_model_version(w: World, responses: list) -> list[str]:
    """A lineage answer from a node mallory may see must not name admin's model or its version."""
    return _names_in(responses, w.model, f"{w.model}/{w.version}")


# -- request builders ------------------------------------------------------------------------------

R = "/tessera.registry.v1.RegistryService/"
S = "/tessera.serving.v1.ServingService/"
O = "/inference.GRPCInferenceService/"  # noqa: E741
Q = "/tessera.retrieval.v1.RetrievalService/"
M = "/tessera.monitoring.v1.MonitoringService/"
H = "/grpc.health.v1.Health/"


def _ref(w: World) -> rpb.ModelVersionRef:
    return rpb.ModelVersionRef(model_name=w.model, version=w.version)


def _model_target(w: World) -> rpb.ArtifactTarget:
    return rpb.ArtifactTarget(model_version=_ref(w))


def _version_node(w: World) -> rpb.LineageNode:
    return rpb.LineageNode(type="MODEL_VERSION", name=f"{w.model}/{w.version}")


def _served(w: World) -> list[spb.ServedModel]:
    return [spb.ServedModel(model_name=w.model, version=w.version)]


def _upload(w: World) -> list[rpb.UploadArtifactsRequest]:
    return [
        rpb.UploadArtifactsRequest(target=_model_target(w)),
        rpb.UploadArtifactsRequest(chunk=rpb.ArtifactChunk(path="planted.txt", data=b"x", offset=0, file_size=1)),
    ]


def _monitor(w: World) -> mpb.Monitor:
    monitor = mpb.Monitor(endpoint=w.endpoint, window_seconds=60, features=[mpb.FeatureSpec(path="latency_ms")])
    monitor.baseline.reference.values.add(feature="latency_ms", numbers=[1.0, 2.0])
    return monitor


def _doc() -> qpb.Document:
    return qpb.Document(id="planted", version=99, vector=[0, 1, 0])


# Each row: full method name -> (request builder, outcome for mallory). A builder returns one request,
# or a list of requests for client-streaming methods.
ROWS: dict[str, tuple[Callable[[World], object], Outcome]] = {
    # -- registry: catalogs and schemas
    R + "CreateCatalog": (lambda w: rpb.CreateCatalogRequest(name=f"mallory{uuid.uuid4().hex[:6]}"), DENIED),
    R + "GetCatalog": (lambda w: rpb.GetCatalogRequest(name=w.catalog), DENIED),
    R + "ListCatalogs": (lambda w: rpb.ListCatalogsRequest(), Filtered(admin_objects)),
    R + "DeleteCatalog": (lambda w: rpb.DeleteCatalogRequest(name=w.catalog, cascade=True), DENIED),
    R + "CreateSchema": (lambda w: rpb.CreateSchemaRequest(catalog_name=w.catalog, name="planted"), DENIED),
    R + "GetSchema": (lambda w: rpb.GetSchemaRequest(full_name=w.schema), DENIED),
    R + "ListSchemas": (
        lambda w: rpb.ListSchemasRequest(catalog_name=w.catalog),
        Filtered(lambda w, r: _names_in(r, w.schema), may_deny=True),
    ),
    R + "DeleteSchema": (lambda w: rpb.DeleteSchemaRequest(full_name=w.schema, cascade=True), DENIED),
    # -- registry: experiments and runs
    R + "CreateExperiment": (
        lambda w: rpb.CreateExperimentRequest(name=f"planted-{uuid.uuid4().hex[:6]}", schema_full_name=w.schema),
        DENIED,
    ),
    R + "GetExperiment": (lambda w: rpb.GetExperimentRequest(experiment_id=w.experiment_id), DENIED),
    R + "SearchExperiments": (lambda w: rpb.SearchExperimentsRequest(), Filtered(admin_objects)),
    R + "DeleteExperiment": (lambda w: rpb.DeleteExperimentRequest(experiment_id=w.experiment_id), DENIED),
    R + "RestoreExperiment": (lambda w: rpb.RestoreExperimentRequest(experiment_id=w.experiment_id), DENIED),
    R + "SetExperimentTag": (
        lambda w: rpb.SetExperimentTagRequest(experiment_id=w.experiment_id, key="k", value="v"),
        DENIED,
    ),
    R + "CreateRun": (lambda w: rpb.CreateRunRequest(experiment_id=w.experiment_id), DENIED),
    R + "UpdateRun": (lambda w: rpb.UpdateRunRequest(run_id=w.run_id, run_name="planted"), DENIED),
    R + "GetRun": (lambda w: rpb.GetRunRequest(run_id=w.run_id), DENIED),
    R + "SearchRuns": (
        lambda w: rpb.SearchRunsRequest(experiment_ids=[w.experiment_id]),
        Filtered(admin_objects, may_deny=True),
    ),
    R + "DeleteRun": (lambda w: rpb.DeleteRunRequest(run_id=w.run_id), DENIED),
    R + "RestoreRun": (lambda w: rpb.RestoreRunRequest(run_id=w.run_id), DENIED),
    R + "LogBatch": (
        lambda w: rpb.LogBatchRequest(run_id=w.run_id, metrics=[rpb.Metric(key="loss", value=9, timestamp_ms=2)]),
        DENIED,
    ),
    R + "DeleteRunTag": (lambda w: rpb.DeleteRunTagRequest(run_id=w.run_id, key="team"), DENIED),
    R + "GetMetricHistory": (lambda w: rpb.GetMetricHistoryRequest(run_id=w.run_id, metric_key="loss"), DENIED),
    # -- registry: models and versions
    R + "CreateRegisteredModel": (lambda w: rpb.CreateRegisteredModelRequest(full_name=f"{w.schema}.planted"), DENIED),
    R + "GetRegisteredModel": (lambda w: rpb.GetRegisteredModelRequest(full_name=w.model), DENIED),
    R + "SearchRegisteredModels": (lambda w: rpb.SearchRegisteredModelsRequest(), Filtered(admin_objects)),
    R + "UpdateRegisteredModel": (
        lambda w: rpb.UpdateRegisteredModelRequest(full_name=w.model, description="planted"),
        DENIED,
    ),
    R + "RenameRegisteredModel": (
        lambda w: rpb.RenameRegisteredModelRequest(full_name=w.model, new_name=f"{w.schema}.stolen"),
        DENIED,
    ),
    R + "DeleteRegisteredModel": (lambda w: rpb.DeleteRegisteredModelRequest(full_name=w.model), DENIED),
    R + "CreateModelVersion": (lambda w: rpb.CreateModelVersionRequest(model_name=w.model), DENIED),
    R + "FinalizeModelVersion": (
        lambda w: rpb.FinalizeModelVersionRequest(model_name=w.model, version=w.version),
        DENIED,
    ),
    R + "GetModelVersion": (lambda w: rpb.GetModelVersionRequest(model_name=w.model, version=w.version), DENIED),
    R + "SearchModelVersions": (
        lambda w: rpb.SearchModelVersionsRequest(model_name=w.model),
        Filtered(admin_objects, may_deny=True),
    ),
    R + "UpdateModelVersion": (
        lambda w: rpb.UpdateModelVersionRequest(model_name=w.model, version=w.version, description="planted"),
        DENIED,
    ),
    R + "DeleteModelVersion": (lambda w: rpb.DeleteModelVersionRequest(model_name=w.model, version=w.version), DENIED),
    R + "SetModelAlias": (
        lambda w: rpb.SetModelAliasRequest(model_name=w.model, alias=w.alias, version=w.version),
        DENIED,
    ),
    R + "DeleteModelAlias": (lambda w: rpb.DeleteModelAliasRequest(model_name=w.model, alias=w.alias), DENIED),
    R + "GetModelVersionByAlias": (
        lambda w: rpb.GetModelVersionByAliasRequest(model_name=w.model, alias=w.alias),
        DENIED,
    ),
    R + "ListAliasHistory": (lambda w: rpb.ListAliasHistoryRequest(model_name=w.model, alias=w.alias), DENIED),
    # -- registry: artifacts
    R + "ListArtifacts": (lambda w: rpb.ListArtifactsRequest(target=_model_target(w)), DENIED),
    R + "DownloadArtifacts": (lambda w: rpb.DownloadArtifactsRequest(target=_model_target(w), path="model.pt"), DENIED),
    R + "UploadArtifacts": (_upload, DENIED),
    # -- registry: lineage
    R + "CreateLineageEdge": (
        lambda w: rpb.CreateLineageEdgeRequest(
            source=rpb.LineageNode(type="TABLE", name="planted"), target=_version_node(w)
        ),
        DENIED,
    ),
    R + "DeleteLineageEdge": (
        lambda w: rpb.DeleteLineageEdgeRequest(
            source=rpb.LineageNode(type="TABLE", name=w.lineage_table), target=_version_node(w)
        ),
        DENIED,
    ),
    # Walking from a node mallory may name (a table) must not reveal admin's model version downstream.
    R + "GetLineage": (
        lambda w: rpb.GetLineageRequest(
            node=rpb.LineageNode(type="TABLE", name=w.lineage_table), direction=rpb.LINEAGE_DIRECTION_DOWNSTREAM
        ),
        Filtered(leaked_model_version, may_deny=True),
    ),
    # -- registry: grants
    R + "Grant": (
        lambda w: rpb.GrantRequest(
            securable_type=rpb.SECURABLE_TYPE_REGISTERED_MODEL,
            securable_full_name=w.model,
            principal="mallory",
            privileges=[rpb.PRIVILEGE_EXECUTE],
        ),
        DENIED,
    ),
    R + "Revoke": (
        lambda w: rpb.RevokeRequest(
            securable_type=rpb.SECURABLE_TYPE_REGISTERED_MODEL,
            securable_full_name=w.model,
            principal="tessera-services",
            privileges=[rpb.PRIVILEGE_EXECUTE],
        ),
        DENIED,
    ),
    R + "ListGrants": (
        lambda w: rpb.ListGrantsRequest(
            securable_type=rpb.SECURABLE_TYPE_REGISTERED_MODEL, securable_full_name=w.model
        ),
        DENIED,
    ),
    R + "SetOwner": (
        lambda w: rpb.SetOwnerRequest(
            securable_type=rpb.SECURABLE_TYPE_REGISTERED_MODEL, securable_full_name=w.model, new_owner="mallory"
        ),
        DENIED,
    ),
    # Asking about someone else is for service principals only.
    R + "CheckPrivilege": (
        lambda w: rpb.CheckPrivilegeRequest(
            principal="admin",
            securable_type=rpb.SECURABLE_TYPE_REGISTERED_MODEL,
            securable_full_name=w.model,
            privilege=rpb.PRIVILEGE_EXECUTE,
        ),
        DENIED,
    ),
    # Reserved to service principals: an ordinary principal may not claim, touch or drop a securable.
    R + "RegisterSecurable": (
        lambda w: rpb.RegisterSecurableRequest(
            securable_type=rpb.SECURABLE_TYPE_ENDPOINT, securable_full_name=w.endpoint, owner="mallory"
        ),
        DENIED,
    ),
    R + "TouchSecurable": (
        lambda w: rpb.TouchSecurableRequest(
            securable_type=rpb.SECURABLE_TYPE_ENDPOINT, securable_full_name=w.endpoint, actor="mallory"
        ),
        DENIED,
    ),
    R + "UnregisterSecurable": (
        lambda w: rpb.UnregisterSecurableRequest(
            securable_type=rpb.SECURABLE_TYPE_ENDPOINT, securable_full_name=w.endpoint, actor="mallory"
        ),
        DENIED,
    ),
    # -- serving: endpoints (creating one needs EXECUTE on every model it serves)
    S + "CreateEndpoint": (
        lambda w: spb.CreateEndpointRequest(name=f"mallory-{uuid.uuid4().hex[:6]}", served_models=_served(w)),
        DENIED,
    ),
    S + "UpdateEndpoint": (lambda w: spb.UpdateEndpointRequest(name=w.endpoint, served_models=_served(w)), DENIED),
    S + "DeleteEndpoint": (lambda w: spb.DeleteEndpointRequest(name=w.endpoint), DENIED),
    S + "GetEndpoint": (lambda w: spb.GetEndpointRequest(name=w.endpoint), HIDDEN),
    S + "ListEndpoints": (lambda w: spb.ListEndpointsRequest(), Filtered(admin_objects)),
    S + "Generate": (lambda w: spb.GenerateRequest(endpoint=w.endpoint, prompt="hello"), DENIED),
    S + "GenerateStream": (lambda w: spb.GenerateRequest(endpoint=w.endpoint, prompt="hello"), DENIED),
    # Usage limits need MANAGE on the endpoint; everyone's usage of it needs SELECT.
    S + "SetUsageLimit": (
        lambda w: spb.SetUsageLimitRequest(
            limit=spb.UsageLimit(endpoint=w.endpoint, metric="requests", period="minute", limit=1)
        ),
        HIDDEN,
    ),
    S + "ListUsageLimits": (lambda w: spb.ListUsageLimitsRequest(endpoint=w.endpoint), HIDDEN),
    S + "GetUsage": (lambda w: spb.GetUsageRequest(endpoint=w.endpoint), HIDDEN),
    # -- serving: Open Inference Protocol (the model name is the endpoint name)
    O + "ServerLive": (lambda w: oip.ServerLiveRequest(), OPEN),
    O + "ServerReady": (lambda w: oip.ServerReadyRequest(), OPEN),
    O + "ServerMetadata": (lambda w: oip.ServerMetadataRequest(), OPEN),
    O + "ModelReady": (lambda w: oip.ModelReadyRequest(name=w.endpoint), HIDDEN),
    O + "ModelMetadata": (lambda w: oip.ModelMetadataRequest(name=w.endpoint), DENIED),
    O + "ModelInfer": (lambda w: tabular_request(w.endpoint, f"mallory-{uuid.uuid4().hex[:6]}"), DENIED),
    O + "ModelStreamInfer": (lambda w: [tabular_request(w.endpoint, f"mallory-{uuid.uuid4().hex[:6]}")], DENIED),
    O + "ModelConfig": (lambda w: oip.ModelConfigRequest(name=w.endpoint), DENIED),
    O + "ModelStatistics": (lambda w: oip.ModelStatisticsRequest(name=w.endpoint), DENIED),
    O + "RepositoryIndex": (lambda w: oip.RepositoryIndexRequest(), Filtered(admin_objects)),
    O + "RepositoryModelLoad": (lambda w: oip.RepositoryModelLoadRequest(model_name=w.endpoint), UNIMPLEMENTED),
    O + "RepositoryModelUnload": (lambda w: oip.RepositoryModelUnloadRequest(model_name=w.endpoint), UNIMPLEMENTED),
    O + "SystemSharedMemoryStatus": (lambda w: oip.SystemSharedMemoryStatusRequest(), UNIMPLEMENTED),
    O + "SystemSharedMemoryRegister": (lambda w: oip.SystemSharedMemoryRegisterRequest(name="m"), UNIMPLEMENTED),
    O + "SystemSharedMemoryUnregister": (lambda w: oip.SystemSharedMemoryUnregisterRequest(name="m"), UNIMPLEMENTED),
    O + "CudaSharedMemoryStatus": (lambda w: oip.CudaSharedMemoryStatusRequest(), UNIMPLEMENTED),
    O + "CudaSharedMemoryRegister": (lambda w: oip.CudaSharedMemoryRegisterRequest(name="m"), UNIMPLEMENTED),
    O + "CudaSharedMemoryUnregister": (lambda w: oip.CudaSharedMemoryUnregisterRequest(name="m"), UNIMPLEMENTED),
    O + "TraceSetting": (lambda w: oip.TraceSettingRequest(model_name=w.endpoint), UNIMPLEMENTED),
    O + "LogSettings": (lambda w: oip.LogSettingsRequest(), UNIMPLEMENTED),
    # -- retrieval (USE_SCHEMA reads, MODIFY writes; the index lives in admin's schema)
    Q + "CreateIndex": (lambda w: qpb.CreateIndexRequest(name=f"{w.catalog}.s.planted", dimension=3), DENIED),
    Q + "DescribeIndex": (lambda w: qpb.DescribeIndexRequest(name=w.index), DENIED),
    Q + "ListIndexes": (lambda w: qpb.ListIndexesRequest(), Filtered(admin_objects)),
    Q + "DeleteIndex": (lambda w: qpb.DeleteIndexRequest(name=w.index), DENIED),
    Q + "BuildIndex": (lambda w: qpb.BuildIndexRequest(name=w.index), DENIED),
    Q + "UpsertDocuments": (lambda w: qpb.UpsertDocumentsRequest(index=w.index, documents=[_doc()]), DENIED),
    Q + "StreamWriteDocuments": (
        lambda w: [qpb.WriteDocumentsRequest(upsert=qpb.UpsertDocumentsRequest(index=w.index, documents=[_doc()]))],
        DENIED,
    ),
    Q + "DeleteDocuments": (
        lambda w: qpb.DeleteDocumentsRequest(index=w.index, documents=[qpb.DocumentRef(id="secret", version=99)]),
        DENIED,
    ),
    Q + "Query": (lambda w: qpb.QueryRequest(index=w.index, vector=[1, 0, 0], k=1), DENIED),
    Q + "QueryBatch": (
        lambda w: qpb.QueryBatchRequest(queries=[qpb.QueryRequest(index=w.index, vector=[1, 0, 0], k=1)]),
        DENIED,
    ),
    Q + "MeasureRecall": (lambda w: qpb.MeasureRecallRequest(index=w.index, k=1, sample_size=1), DENIED),
    # -- monitoring (SELECT on the endpoint reads its logs; SELECT reads a monitor, MANAGE changes it)
    M + "ListInferenceRecords": (lambda w: mpb.ListInferenceRecordsRequest(endpoint=w.endpoint), DENIED),
    M + "CreateMonitor": (lambda w: mpb.CreateMonitorRequest(monitor=_monitor(w)), DENIED),
    M + "GetMonitor": (lambda w: mpb.GetMonitorRequest(monitor_id=w.monitor_id), DENIED),
    M + "ListMonitors": (lambda w: mpb.ListMonitorsRequest(), Filtered(admin_objects)),
    M + "DeleteMonitor": (lambda w: mpb.DeleteMonitorRequest(monitor_id=w.monitor_id), DENIED),
    M + "GetProfiles": (lambda w: mpb.GetProfilesRequest(monitor_id=w.monitor_id), DENIED),
    M + "ListDriftMetrics": (lambda w: mpb.ListDriftMetricsRequest(monitor_id=w.monitor_id), DENIED),
    M + "ListDriftEvents": (lambda w: mpb.ListDriftEventsRequest(monitor_id=w.monitor_id), DENIED),
    M + "ListQualityMetrics": (lambda w: mpb.ListQualityMetricsRequest(endpoint=w.endpoint), DENIED),
}

# Health is public on every server: one row per method, checked on each service.
HEALTH_ROWS = {H + "Check", H + "Watch", H + "List"}


# -- calling a method by its full name ---------------------------------------------------------------


def _method(full_name: str):
    service, name = full_name.strip("/").split("/")
    return descriptor_pool.Default().FindServiceByName(service).FindMethodByName(name)


async def _call(channel: grpc.aio.Channel, full_name: str, request, metadata, timeout: float = 30.0) -> list:
    """Call any method generically; returns every response (one for unary answers)."""
    method = _method(full_name)
    output = message_factory.GetMessageClass(method.output_type)
    serialize, parse = (lambda m: m.SerializeToString()), output.FromString
    if method.client_streaming and method.server_streaming:
        call = channel.stream_stream(full_name, request_serializer=serialize, response_deserializer=parse)
        return [r async for r in call(iter(request), metadata=metadata, timeout=timeout)]
    if method.client_streaming:
        call = channel.stream_unary(full_name, request_serializer=serialize, response_deserializer=parse)
        return [await call(iter(request), metadata=metadata, timeout=timeout)]
    if method.server_streaming:
        call = channel.unary_stream(full_name, request_serializer=serialize, response_deserializer=parse)
        return [r async for r in call(request, metadata=metadata, timeout=timeout)]
    call = channel.unary_unary(full_name, request_serializer=serialize, response_deserializer=parse)
    return [await call(request, metadata=metadata, timeout=timeout)]


def _channel_for(mesh: Mesh, full_name: str) -> grpc.aio.Channel:
    service = full_name.strip("/").split("/")[0]
    owner = {
        "tessera.registry.v1.RegistryService": "registry",
        "tessera.serving.v1.ServingService": "serving",
        "inference.GRPCInferenceService": "serving",
        "tessera.retrieval.v1.RetrievalService": "retrieval",
        "tessera.monitoring.v1.MonitoringService": "monitoring",
    }[service]
    return mesh.channels[owner]


async def _served_services(channel: grpc.aio.Channel) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names: list[str] = []
    async for reply in replies:
        names.extend(s.name for s in reply.list_services_response.service)
    return names


REFUSAL_WORDS = ("permission", "denied", "may not", "lacks", "not allowed")


def _stream_refusals(responses: list) -> list[str]:
    """ModelStreamInfer reports a request's failure in the stream (Triton's error_message)."""
    return [r.error_message for r in responses if getattr(r, "error_message", "")]


# -- the tests ---------------------------------------------------------------------------------------


async def test_every_rpc_has_a_row(world: World) -> None:
    served: set[str] = set()
    for channel in world.mesh.channels.values():
        for service in await _served_services(channel):
            if service in TOOLING:
                continue
            descriptor = descriptor_pool.Default().FindServiceByName(service)
            served.update(f"/{service}/{m.name}" for m in descriptor.methods)
    assert sorted(served - set(ROWS) - HEALTH_ROWS) == [], "RPCs without a row in the authorization matrix"
    assert sorted(set(ROWS) - served) == [], "rows for RPCs no service serves"


def _matrix_order(full_name: str) -> tuple[bool, str]:
    """Calls that would destroy or re-point admin's objects, should they be let through, run last,
    so one missing check does not turn every later row into NOT_FOUND."""
    name = full_name.rsplit("/", 1)[-1]
    return name.startswith(DESTRUCTIVE), full_name


DESTRUCTIVE = ("Delete", "Rename", "Update", "SetOwner", "Revoke", "Unregister", "Restore")


@pytest.mark.parametrize("full_name", sorted(ROWS, key=_matrix_order))
async def test_ungranted_principal(world: World, full_name: str) -> None:
    build, outcome = ROWS[full_name]
    channel = _channel_for(world.mesh, full_name)
    try:
        responses = await _call(channel, full_name, build(world), as_("mallory"))
    except grpc.aio.AioRpcError as exc:
        code, details = exc.code(), exc.details()
        if outcome is DENIED or (outcome.kind == "filtered" and outcome.may_deny):
            assert code == grpc.StatusCode.PERMISSION_DENIED, f"{full_name}: {code.name} {details}"
        elif outcome is HIDDEN:
            assert code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED), f"{full_name}: {code.name}"
        elif outcome is UNIMPLEMENTED:
            assert code == grpc.StatusCode.UNIMPLEMENTED, f"{full_name}: {code.name} {details}"
        else:
            pytest.fail(f"{full_name} should answer mallory, got {code.name}: {details}")
        return
    if outcome is HIDDEN:
        pytest.fail(
            f"{full_name} answered mallory about an object she may not see: {[str(r)[:200] for r in responses]}"
        )
    if outcome is DENIED:
        # Only ModelStreamInfer may answer a refusal in-band: every response an error, none with a result.
        refusals = _stream_refusals(responses)
        assert len(refusals) == len(responses) > 0, f"{full_name} answered mallory: {[str(r)[:200] for r in responses]}"
        assert all(any(word in r.lower() for word in REFUSAL_WORDS) for r in refusals), refusals
        assert not any(r.infer_response.raw_output_contents or r.infer_response.outputs for r in responses)
    elif outcome.kind == "filtered":
        assert outcome.leaks(world, responses) == [], f"{full_name} shows mallory admin's objects"
    elif outcome is UNIMPLEMENTED:
        pytest.fail(f"{full_name} is implemented now: give it a real row")
    else:
        assert outcome in (OPEN, PUBLIC)
        assert admin_objects(world, responses) == []


async def test_an_endpoint_cannot_be_repointed_to_the_callers_own_model(world: World, tmp_path_factory) -> None:
    """The hijack: mallory may execute a model of her own, which is not a right over admin's endpoint."""
    mesh, md, u = world.mesh, as_("admin"), uuid.uuid4().hex[:6]
    catalog = f"mallory{u}"
    await mesh.admin.ensure_schema(catalog, "s")
    await mesh.admin.grant(rpb.SECURABLE_TYPE_CATALOG, catalog, "mallory", [rpb.PRIVILEGE_USE_CATALOG])
    await mesh.admin.grant(
        rpb.SECURABLE_TYPE_SCHEMA, f"{catalog}.s", "mallory", [rpb.PRIVILEGE_USE_SCHEMA, rpb.PRIVILEGE_CREATE_MODEL]
    )
    mallory = RegistryClient(mesh.addresses["registry"], TOKENS["mallory"])
    try:
        own = f"{catalog}.s.bait"
        await mallory.register(own, build_tabular_model(tmp_path_factory.mktemp("bait"), 100.0))
    finally:
        await mallory.channel.close()
    await mesh.grant_service_reads(catalog, f"{catalog}.s", own)
    victim = f"victim-{u}"
    await mesh.serving_stub().CreateEndpoint(
        spb.CreateEndpointRequest(name=victim, served_models=_served(world), wait=True), metadata=md
    )
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await mesh.serving_stub().UpdateEndpoint(
                spb.UpdateEndpointRequest(name=victim, served_models=[spb.ServedModel(model_name=own, version=1)]),
                metadata=as_("mallory"),
            )
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, refused.value.details()
        still = await mesh.serving_stub().GetEndpoint(spb.GetEndpointRequest(name=victim), metadata=md)
        assert [m.model_name for m in still.served_models] == [world.model]
    finally:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await mesh.serving_stub().DeleteEndpoint(spb.DeleteEndpointRequest(name=victim), metadata=md)


@pytest.mark.parametrize("service", ["registry", "serving", "retrieval", "monitoring"])
async def test_health_is_public(world: World, service: str) -> None:
    """Every method of grpc.health.v1.Health answers without credentials and names no object."""
    channel = world.mesh.channels[service]
    for full_name in sorted(HEALTH_ROWS):
        method = _method(full_name)
        request = message_factory.GetMessageClass(method.input_type)()
        if method.server_streaming:
            call = channel.unary_stream(
                full_name,
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=message_factory.GetMessageClass(method.output_type).FromString,
            )
            watch = call(request, timeout=5)
            answers = [await watch.read()]
            watch.cancel()
        else:
            try:
                answers = await _call(channel, full_name, request, metadata=None, timeout=5)
            except grpc.aio.AioRpcError as exc:
                # List is newer than some grpcio-health-checking servicers: UNIMPLEMENTED is fine, INTERNAL is not.
                assert (full_name, exc.code()) == (H + "List", grpc.StatusCode.UNIMPLEMENTED), exc.details()
                continue
        assert answers and admin_objects(world, answers) == [], (full_name, answers)
        if full_name != H + "List":
            assert answers[0].status == health_pb2.HealthCheckResponse.SERVING, (full_name, answers)


# -- MLflow REST -------------------------------------------------------------------------------------

API = "/api/2.0/mlflow"

# (method, path, query or JSON body builder, outcome): "denied" is HTTP 403 PERMISSION_DENIED;
# "filtered" answers 200 without admin's objects; "filtered or denied" may also be a 403 (a search
# scoped to one of admin's objects).
REST_ROWS: list[tuple[str, str, Callable[[World], dict], str]] = [
    ("GET", f"{API}/experiments/get", lambda w: {"experiment_id": w.experiment_id}, "denied"),
    ("GET", f"{API}/experiments/get-by-name", lambda w: {"experiment_name": w.experiment_name}, "denied"),
    ("POST", f"{API}/experiments/search", lambda w: {"max_results": 1000}, "filtered"),
    ("POST", f"{API}/experiments/delete", lambda w: {"experiment_id": w.experiment_id}, "denied"),
    ("POST", f"{API}/runs/create", lambda w: {"experiment_id": w.experiment_id}, "denied"),
    ("GET", f"{API}/runs/get", lambda w: {"run_id": w.run_id}, "denied"),
    (
        "POST",
        f"{API}/runs/log-metric",
        lambda w: {"run_id": w.run_id, "key": "x", "value": 1, "timestamp": 1},
        "denied",
    ),
    ("POST", f"{API}/runs/delete", lambda w: {"run_id": w.run_id}, "denied"),
    ("GET", f"{API}/metrics/get-history", lambda w: {"run_id": w.run_id, "metric_key": "loss"}, "denied"),
    ("GET", f"{API}/registered-models/get", lambda w: {"name": w.model}, "denied"),
    ("GET", f"{API}/registered-models/search", lambda w: {"max_results": 1000}, "filtered"),
    ("DELETE", f"{API}/registered-models/delete", lambda w: {"name": w.model}, "denied"),
    (
        "POST",
        f"{API}/registered-models/alias",
        lambda w: {"name": w.model, "alias": "x", "version": str(w.version)},
        "denied",
    ),
    ("GET", f"{API}/model-versions/get", lambda w: {"name": w.model, "version": str(w.version)}, "denied"),
    ("GET", f"{API}/model-versions/search", lambda w: {"filter": f"name='{w.model}'"}, "filtered or denied"),
    ("GET", f"{API}/model-versions/get-download-uri", lambda w: {"name": w.model, "version": str(w.version)}, "denied"),
    ("POST", f"{API}/model-versions/create", lambda w: {"name": w.model, "source": "/tmp"}, "denied"),
]


def _rest(world: World, method: str, path: str, params: dict) -> tuple[int, dict]:
    url = world.mesh.registry_http + path
    body = None
    if method == "GET":
        url += "?" + urllib.parse.urlencode(params)
    else:
        body = json.dumps(params).encode()
    request = urllib.request.Request(url, data=body, method=method)
    request.add_header("Authorization", "Bearer mallory-token")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.mark.parametrize(
    ("method", "path", "params", "outcome"), REST_ROWS, ids=[f"{m} {p}" for m, p, _, _ in REST_ROWS]
)
async def test_ungranted_principal_over_mlflow_rest(world: World, method, path, params, outcome) -> None:
    import asyncio

    status, body = await asyncio.to_thread(_rest, world, method, path, params(world))
    if outcome == "denied" or (outcome == "filtered or denied" and status == 403):
        assert (status, body.get("error_code")) == (403, "PERMISSION_DENIED"), (status, body)
    else:
        assert status == 200, (status, body)
        assert admin_objects(world, [json.dumps(body)]) == [], body


async def test_admin_objects_survived_the_matrix(world: World) -> None:
    """Denied writes really were refused: admin's objects are all still there, unchanged."""
    mesh, md = world.mesh, as_("admin")
    reg = mesh.registry_stub()
    model = await reg.GetRegisteredModel(rpb.GetRegisteredModelRequest(full_name=world.model), metadata=md)
    assert model.description != "planted"
    by_alias = await reg.GetModelVersionByAlias(
        rpb.GetModelVersionByAliasRequest(model_name=world.model, alias=world.alias), metadata=md
    )
    assert by_alias.version == world.version
    grants = await reg.ListGrants(
        rpb.ListGrantsRequest(securable_type=rpb.SECURABLE_TYPE_REGISTERED_MODEL, securable_full_name=world.model),
        metadata=md,
    )
    assert "mallory" not in {a.principal for a in grants.assignments} and grants.owner == "admin"
    endpoint = await mesh.serving_stub().GetEndpoint(spb.GetEndpointRequest(name=world.endpoint), metadata=md)
    assert endpoint.state == "READY"
    await mesh.monitoring_stub().GetMonitor(mpb.GetMonitorRequest(monitor_id=world.monitor_id), metadata=md)
    hits = await mesh.retrieval_stub().Query(qpb.QueryRequest(index=world.index, vector=[0, 1, 0], k=5), metadata=md)
    assert [h.id for h in hits.hits] == ["secret"]
