"""Core types <-> tessera.registry.v1 messages."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp
from tessera.registry.v1 import registry_pb2 as pb

from services.common.errors import InvalidArgument
from services.registry import entities as e
from services.registry.access import SecurableType


def ts(value: datetime | None) -> Timestamp:
    stamp = Timestamp()
    if value is not None:
        stamp.FromDatetime(value)
    return stamp


def enum_name(enum_type, value: int, prefix: str) -> str:
    try:
        return enum_type.Name(value).removeprefix(prefix)
    except ValueError:
        # A value from a newer client, or garbage: say which field and value.
        field = prefix.rstrip("_").lower()
        raise InvalidArgument(f"unknown {field} value {value}", field=field) from None


def securable_type(value: int) -> SecurableType:
    if value == pb.SECURABLE_TYPE_UNSPECIFIED:
        raise InvalidArgument("securable_type is required", field="securable_type")
    return SecurableType(enum_name(pb.SecurableType, value, "SECURABLE_TYPE_"))


def privilege_names(values) -> list[str]:
    names = []
    for value in values:
        if value == pb.PRIVILEGE_UNSPECIFIED:
            raise InvalidArgument("privilege is unspecified", field="privileges")
        names.append(enum_name(pb.Privilege, value, "PRIVILEGE_"))
    return names


def privilege_values(names: list[str]) -> list[int]:
    return [pb.Privilege.Value("PRIVILEGE_" + n) for n in names]


def view_type(value: int) -> str:
    return enum_name(pb.ViewType, value, "VIEW_TYPE_")


def stage(value: str) -> int:
    return pb.LIFECYCLE_STAGE_DELETED if value == e.DELETED else pb.LIFECYCLE_STAGE_ACTIVE


def top_level_securable(t: e.TopLevelSecurable) -> pb.RegisterSecurableResponse:
    return pb.RegisterSecurableResponse(
        securable_type=pb.SecurableType.Value("SECURABLE_TYPE_" + t.securable_type),
        securable_full_name=t.name,
        owner=t.owner,
        created_at=ts(t.created_at),
    )


def catalog(c: e.Catalog) -> pb.Catalog:
    return pb.Catalog(
        name=c.name, comment=c.comment, owner=c.owner, created_at=ts(c.created_at), updated_at=ts(c.updated_at)
    )


def schema(s: e.Schema) -> pb.Schema:
    return pb.Schema(
        catalog_name=s.catalog_name,
        name=s.name,
        full_name=s.full_name,
        comment=s.comment,
        owner=s.owner,
        created_at=ts(s.created_at),
        updated_at=ts(s.updated_at),
    )


def experiment(x: e.Experiment) -> pb.Experiment:
    return pb.Experiment(
        experiment_id=x.experiment_id,
        name=x.name,
        artifact_location=x.artifact_location,
        lifecycle_stage=stage(x.lifecycle_stage),
        owner=x.owner,
        tags=x.tags,
        creation_time_ms=x.creation_time,
        last_update_time_ms=x.last_update_time,
        schema_full_name=x.schema_full_name,
    )


def metric(m: e.Metric) -> pb.Metric:
    return pb.Metric(key=m.key, value=m.value, step=m.step, timestamp_ms=m.timestamp)


def run(r: e.Run) -> pb.Run:
    i = r.info
    return pb.Run(
        info=pb.RunInfo(
            run_id=i.run_id,
            run_name=i.run_name,
            experiment_id=i.experiment_id,
            user_id=i.user_id,
            status=pb.RunStatus.Value("RUN_STATUS_" + i.status),
            start_time_ms=i.start_time,
            end_time_ms=i.end_time or 0,
            artifact_uri=i.artifact_uri,
            lifecycle_stage=stage(i.lifecycle_stage),
        ),
        data=pb.RunData(
            metrics=[metric(m) for m in r.metrics],
            params=[pb.Param(key=k, value=v) for k, v in sorted(r.params.items())],
            tags=[pb.RunTag(key=k, value=v) for k, v in sorted(r.tags.items())],
        ),
    )


def run_status(value: int) -> str:
    return "" if value == pb.RUN_STATUS_UNSPECIFIED else enum_name(pb.RunStatus, value, "RUN_STATUS_")


def registered_model(m: e.RegisteredModel) -> pb.RegisteredModel:
    return pb.RegisteredModel(
        full_name=m.full_name,
        catalog_name=m.catalog_name,
        schema_name=m.schema_name,
        name=m.name,
        description=m.description,
        owner=m.owner,
        tags=m.tags,
        aliases=[pb.ModelAlias(alias=a, version=v) for a, v in sorted(m.aliases.items())],
        created_at=ts(m.created_at),
        updated_at=ts(m.updated_at),
        latest_version=m.latest_version,
    )


def model_version(v: e.ModelVersion) -> pb.ModelVersion:
    return pb.ModelVersion(
        model_name=v.model_name,
        version=v.version,
        source=v.source,
        run_id=v.run_id,
        status=pb.ModelVersionStatus.Value("MODEL_VERSION_STATUS_" + v.status),
        status_message=v.status_message,
        description=v.description,
        created_by=v.created_by,
        created_at=ts(v.created_at),
        updated_at=ts(v.updated_at),
        tags=v.tags,
        aliases=v.aliases,
        storage_location=v.storage_location,
        model_id=v.model_id,
    )


def alias_move(m: e.AliasMove) -> pb.AliasHistoryEntry:
    return pb.AliasHistoryEntry(
        alias=m.alias,
        action=pb.AliasHistoryEntry.Action.Value(m.action),
        version=m.version,
        previous_version=m.previous_version,
        actor=m.actor,
        at=ts(m.at),
    )


def node_in(n: pb.LineageNode) -> e.LineageNode:
    return e.LineageNode(n.type, n.name)


def node_out(n: e.LineageNode) -> pb.LineageNode:
    return pb.LineageNode(type=n.type, name=n.name)


def edge(x: e.LineageEdge) -> pb.LineageEdge:
    return pb.LineageEdge(
        source=node_out(x.source),
        target=node_out(x.target),
        properties=x.properties,
        created_by=x.created_by,
        created_at=ts(x.created_at),
    )


def file_info(f: e.FileInfo) -> pb.FileInfo:
    return pb.FileInfo(path=f.path, is_dir=f.is_dir, size=f.size)
