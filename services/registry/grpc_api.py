"""gRPC front end: tessera.registry.v1.RegistryService -> the registry core -> messages.

Thin by design: each method converts the request, calls the core as the
caller's principal, and converts the answer. Errors are the core's
(services.common.errors) and the shared pipeline maps them to status codes.
"""

from __future__ import annotations

from tessera.common.v1 import common_pb2
from tessera.registry.v1 import registry_pb2 as pb
from tessera.registry.v1 import registry_pb2_grpc

from services.common.auth import current_principal
from services.common.errors import InvalidArgument
from services.registry import grpc_convert as cv
from services.registry.artifact_service import Target
from services.registry.context import now_ms
from services.registry.entities import MetricColumns
from services.registry.registry import Registry

SERVICE_NAME = "tessera.registry.v1.RegistryService"
_DONE = pb.DeleteResponse()


def _who() -> str:
    return current_principal().name


def _page(token: str) -> common_pb2.PageResponse:
    return common_pb2.PageResponse(next_page_token=token)


def _target(t: pb.ArtifactTarget) -> Target:
    kind = t.WhichOneof("target")
    if kind == "run_id":
        return Target(run_id=t.run_id)
    if kind == "model_version":
        return Target(model_name=t.model_version.model_name, version=t.model_version.version)
    if kind == "logged_model_id":
        return Target(logged_model_id=t.logged_model_id)
    raise InvalidArgument("artifact target is required", field="target")


class RegistryServicer(registry_pb2_grpc.RegistryServiceServicer):
    def __init__(self, registry: Registry) -> None:
        self.r = registry

    # -- catalogs and schemas -----------------------------------------------------------

    async def CreateCatalog(self, request, context):
        return cv.catalog(await self.r.catalogs.create_catalog(_who(), request.name, request.comment))

    async def GetCatalog(self, request, context):
        return cv.catalog(await self.r.catalogs.get_catalog(_who(), request.name))

    async def ListCatalogs(self, request, context):
        page = await self.r.catalogs.list_catalogs(_who(), request.page.page_size, request.page.page_token)
        return pb.ListCatalogsResponse(catalogs=[cv.catalog(c) for c in page.items], page=_page(page.next_token))

    async def DeleteCatalog(self, request, context):
        await self.r.catalogs.delete_catalog(_who(), request.name, request.cascade)
        return _DONE

    async def CreateSchema(self, request, context):
        return cv.schema(
            await self.r.catalogs.create_schema(_who(), request.catalog_name, request.name, request.comment)
        )

    async def GetSchema(self, request, context):
        return cv.schema(await self.r.catalogs.get_schema(_who(), request.full_name))

    async def ListSchemas(self, request, context):
        page = await self.r.catalogs.list_schemas(
            _who(), request.catalog_name, request.page.page_size, request.page.page_token
        )
        return pb.ListSchemasResponse(schemas=[cv.schema(s) for s in page.items], page=_page(page.next_token))

    async def DeleteSchema(self, request, context):
        await self.r.catalogs.delete_schema(_who(), request.full_name, request.cascade)
        return _DONE

    # -- experiments and runs -----------------------------------------------------------

    async def CreateExperiment(self, request, context):
        x = await self.r.tracking.create_experiment(
            _who(), request.name, request.artifact_location, dict(request.tags), request.schema_full_name
        )
        return cv.experiment(x)

    async def GetExperiment(self, request, context):
        key = request.WhichOneof("key")
        if key is None:
            raise InvalidArgument("experiment_id or name is required", field="key")
        if key == "name":
            return cv.experiment(await self.r.tracking.get_experiment(_who(), name=request.name))
        return cv.experiment(await self.r.tracking.get_experiment(_who(), experiment_id=request.experiment_id))

    async def SearchExperiments(self, request, context):
        page = await self.r.tracking.search_experiments(
            _who(),
            request.filter,
            cv.view_type(request.view_type),
            list(request.order_by),
            request.page.page_size,
            request.page.page_token,
        )
        return pb.SearchExperimentsResponse(
            experiments=[cv.experiment(x) for x in page.items], page=_page(page.next_token)
        )

    async def DeleteExperiment(self, request, context):
        await self.r.tracking.set_experiment_stage(_who(), request.experiment_id, "deleted")
        return _DONE

    async def RestoreExperiment(self, request, context):
        return cv.experiment(await self.r.tracking.set_experiment_stage(_who(), request.experiment_id, "active"))

    async def SetExperimentTag(self, request, context):
        return cv.experiment(
            await self.r.tracking.set_experiment_tag(_who(), request.experiment_id, request.key, request.value)
        )

    async def CreateRun(self, request, context):
        r = await self.r.tracking.create_run(
            _who(),
            request.experiment_id,
            request.run_name,
            request.start_time_ms,
            {t.key: t.value for t in request.tags},
            request.user_id,
        )
        return cv.run(r)

    async def UpdateRun(self, request, context):
        r = await self.r.tracking.update_run(
            _who(), request.run_id, cv.run_status(request.status), request.end_time_ms or None, request.run_name
        )
        return cv.run(r)

    async def GetRun(self, request, context):
        return cv.run(await self.r.tracking.get_run(_who(), request.run_id))

    async def SearchRuns(self, request, context):
        page = await self.r.tracking.search_runs(
            _who(),
            list(request.experiment_ids),
            request.filter,
            cv.view_type(request.view_type),
            list(request.order_by),
            request.page.page_size,
            request.page.page_token,
        )
        return pb.SearchRunsResponse(runs=[cv.run(r) for r in page.items], page=_page(page.next_token))

    async def DeleteRun(self, request, context):
        await self.r.tracking.set_run_stage(_who(), request.run_id, "deleted")
        return _DONE

    async def RestoreRun(self, request, context):
        return cv.run(await self.r.tracking.set_run_stage(_who(), request.run_id, "active"))

    async def LogBatch(self, request, context):
        ms, now = request.metrics, now_ms()
        columns = MetricColumns(
            [m.key for m in ms], [m.value for m in ms], [m.step for m in ms], [m.timestamp_ms or now for m in ms]
        )
        await self.r.tracking.log_batch(
            _who(),
            request.run_id,
            columns,
            [(p.key, p.value) for p in request.params],
            [(t.key, t.value) for t in request.tags],
        )
        return pb.LogBatchResponse()

    async def DeleteRunTag(self, request, context):
        await self.r.tracking.delete_run_tag(_who(), request.run_id, request.key)
        return _DONE

    async def GetMetricHistory(self, request, context):
        page = await self.r.tracking.metric_history(
            _who(),
            request.run_id,
            request.metric_key,
            request.page.page_size,
            request.page.page_token,
            request.max_points,
        )
        return pb.GetMetricHistoryResponse(metrics=[cv.metric(m) for m in page.items], page=_page(page.next_token))

    # -- registered models and versions ----------------------------------------------------

    async def CreateRegisteredModel(self, request, context):
        m = await self.r.models.create_model(_who(), request.full_name, request.description, dict(request.tags))
        return cv.registered_model(m)

    async def GetRegisteredModel(self, request, context):
        return cv.registered_model(await self.r.models.get_model(_who(), request.full_name))

    async def SearchRegisteredModels(self, request, context):
        page = await self.r.models.search_models(
            _who(),
            request.catalog_name,
            request.schema_name,
            request.name_contains,
            request.page.page_size,
            request.page.page_token,
        )
        return pb.SearchRegisteredModelsResponse(
            registered_models=[cv.registered_model(m) for m in page.items], page=_page(page.next_token)
        )

    async def UpdateRegisteredModel(self, request, context):
        m = await self.r.models.update_model(
            _who(),
            request.full_name,
            request.description if request.HasField("description") else None,
            dict(request.set_tags),
            list(request.delete_tags),
        )
        return cv.registered_model(m)

    async def RenameRegisteredModel(self, request, context):
        return cv.registered_model(await self.r.models.rename_model(_who(), request.full_name, request.new_name))

    async def DeleteRegisteredModel(self, request, context):
        await self.r.models.delete_model(_who(), request.full_name)
        return _DONE

    async def CreateModelVersion(self, request, context):
        v = await self.r.models.create_version(
            _who(), request.model_name, request.source, request.run_id, request.description, dict(request.tags)
        )
        return cv.model_version(v)

    async def FinalizeModelVersion(self, request, context):
        return cv.model_version(await self.r.models.finalize_version(_who(), request.model_name, request.version))

    async def GetModelVersion(self, request, context):
        return cv.model_version(await self.r.models.get_version(_who(), request.model_name, request.version))

    async def SearchModelVersions(self, request, context):
        page = await self.r.models.search_versions(
            _who(), request.model_name, request.run_id, request.page.page_size, request.page.page_token
        )
        return pb.SearchModelVersionsResponse(
            model_versions=[cv.model_version(v) for v in page.items], page=_page(page.next_token)
        )

    async def UpdateModelVersion(self, request, context):
        v = await self.r.models.update_version(
            _who(),
            request.model_name,
            request.version,
            request.description if request.HasField("description") else None,
            dict(request.set_tags),
            list(request.delete_tags),
        )
        return cv.model_version(v)

    async def DeleteModelVersion(self, request, context):
        await self.r.models.delete_version(_who(), request.model_name, request.version)
        return _DONE

    # -- aliases ---------------------------------------------------------------------------

    async def SetModelAlias(self, request, context):
        return cv.model_version(
            await self.r.models.set_alias(_who(), request.model_name, request.alias, request.version)
        )

    async def DeleteModelAlias(self, request, context):
        await self.r.models.delete_alias(_who(), request.model_name, request.alias)
        return _DONE

    async def GetModelVersionByAlias(self, request, context):
        return cv.model_version(await self.r.models.version_by_alias(_who(), request.model_name, request.alias))

    async def ListAliasHistory(self, request, context):
        page = await self.r.models.alias_history(
            _who(), request.model_name, request.alias, request.page.page_size, request.page.page_token
        )
        return pb.ListAliasHistoryResponse(entries=[cv.alias_move(m) for m in page.items], page=_page(page.next_token))

    # -- artifacts -------------------------------------------------------------------------

    async def ListArtifacts(self, request, context):
        files = await self.r.artifacts.list(_who(), _target(request.target), request.path)
        return pb.ListArtifactsResponse(files=[cv.file_info(f) for f in files])

    async def DownloadArtifacts(self, request, context):
        chunks = self.r.artifacts.download(_who(), _target(request.target), request.path, request.chunk_size)
        async for path, data, offset, size in chunks:
            yield pb.ArtifactChunk(path=path, data=data, offset=offset, file_size=size)

    async def UploadArtifacts(self, request_iterator, context):
        writer = None
        try:
            async for message in request_iterator:
                item = message.WhichOneof("item")
                if item == "target":
                    if writer is not None:
                        raise InvalidArgument("the target comes once, in the first message", field="target")
                    relative = await self.r.artifacts.location(_who(), _target(message.target), write=True)
                    writer = self.r.artifacts.ctx.files.writer(relative)
                elif item == "chunk":
                    if writer is None:
                        raise InvalidArgument("the first message must name the target", field="target")
                    await writer.write(message.chunk.path, message.chunk.data, message.chunk.offset)
                else:
                    raise InvalidArgument("empty upload message", field="item")
            if writer is None:
                raise InvalidArgument("empty upload: no target", field="target")
            return pb.UploadArtifactsResponse(files_written=writer.files_written, bytes_written=writer.bytes_written)
        finally:
            if writer is not None:
                await writer.close()

    # -- lineage ---------------------------------------------------------------------------

    async def CreateLineageEdge(self, request, context):
        edge = await self.r.lineage.add_edge(
            _who(), cv.node_in(request.source), cv.node_in(request.target), dict(request.properties)
        )
        return cv.edge(edge)

    async def DeleteLineageEdge(self, request, context):
        await self.r.lineage.delete_edge(_who(), cv.node_in(request.source), cv.node_in(request.target))
        return _DONE

    async def GetLineage(self, request, context):
        direction = cv.enum_name(pb.LineageDirection, request.direction, "LINEAGE_DIRECTION_")
        nodes, edges = await self.r.lineage.lineage(_who(), cv.node_in(request.node), direction, request.max_depth)
        return pb.GetLineageResponse(nodes=[cv.node_out(n) for n in nodes], edges=[cv.edge(e) for e in edges])

    # -- grants ----------------------------------------------------------------------------

    async def _grants(self, request, grant: bool):
        privileges = await self.r.catalogs.update_grants(
            _who(),
            cv.securable_type(request.securable_type),
            request.securable_full_name,
            request.principal,
            cv.privilege_names(request.privileges),
            grant,
        )
        return pb.PrivilegeAssignment(principal=request.principal, privileges=cv.privilege_values(privileges))

    async def Grant(self, request, context):
        return await self._grants(request, True)

    async def Revoke(self, request, context):
        return await self._grants(request, False)

    async def ListGrants(self, request, context):
        grants, owner = await self.r.catalogs.list_grants(
            _who(), cv.securable_type(request.securable_type), request.securable_full_name, request.principal
        )
        return pb.ListGrantsResponse(
            assignments=[
                pb.PrivilegeAssignment(principal=p, privileges=cv.privilege_values(v)) for p, v in grants.items()
            ],
            owner=owner,
        )

    async def SetOwner(self, request, context):
        owner = await self.r.catalogs.set_owner(
            _who(), cv.securable_type(request.securable_type), request.securable_full_name, request.new_owner
        )
        return pb.SetOwnerResponse(owner=owner)

    async def CheckPrivilege(self, request, context):
        if request.privilege == pb.PRIVILEGE_UNSPECIFIED:
            raise InvalidArgument("privilege is required", field="privilege")
        decision = await self.r.catalogs.check_privilege(
            _who(),
            request.principal,
            cv.securable_type(request.securable_type),
            request.securable_full_name,
            cv.privilege_names([request.privilege])[0],
        )
        return pb.CheckPrivilegeResponse(allowed=decision.allowed, reason=decision.reason)

    # -- securables other services own -------------------------------------------------------

    async def RegisterSecurable(self, request, context):
        created = await self.r.catalogs.register_securable(
            _who(), cv.securable_type(request.securable_type), request.securable_full_name, request.owner
        )
        return cv.top_level_securable(created)

    async def TouchSecurable(self, request, context):
        touched = await self.r.catalogs.touch_securable(
            _who(), cv.securable_type(request.securable_type), request.securable_full_name, request.actor
        )
        return cv.top_level_securable(touched)

    async def UnregisterSecurable(self, request, context):
        await self.r.catalogs.unregister_securable(
            _who(), cv.securable_type(request.securable_type), request.securable_full_name, request.actor
        )
        return _DONE
