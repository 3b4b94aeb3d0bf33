import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from tessera.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SecurableType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SECURABLE_TYPE_UNSPECIFIED: _ClassVar[SecurableType]
    SECURABLE_TYPE_CATALOG: _ClassVar[SecurableType]
    SECURABLE_TYPE_SCHEMA: _ClassVar[SecurableType]
    SECURABLE_TYPE_REGISTERED_MODEL: _ClassVar[SecurableType]
    SECURABLE_TYPE_EXPERIMENT: _ClassVar[SecurableType]
    SECURABLE_TYPE_ENDPOINT: _ClassVar[SecurableType]
    SECURABLE_TYPE_MONITOR: _ClassVar[SecurableType]
    SECURABLE_TYPE_DATASET: _ClassVar[SecurableType]

class Privilege(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PRIVILEGE_UNSPECIFIED: _ClassVar[Privilege]
    PRIVILEGE_USE_CATALOG: _ClassVar[Privilege]
    PRIVILEGE_USE_SCHEMA: _ClassVar[Privilege]
    PRIVILEGE_CREATE_MODEL: _ClassVar[Privilege]
    PRIVILEGE_EXECUTE: _ClassVar[Privilege]
    PRIVILEGE_MODIFY: _ClassVar[Privilege]
    PRIVILEGE_MANAGE: _ClassVar[Privilege]
    PRIVILEGE_CREATE_SCHEMA: _ClassVar[Privilege]
    PRIVILEGE_SELECT: _ClassVar[Privilege]

class LifecycleStage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LIFECYCLE_STAGE_UNSPECIFIED: _ClassVar[LifecycleStage]
    LIFECYCLE_STAGE_ACTIVE: _ClassVar[LifecycleStage]
    LIFECYCLE_STAGE_DELETED: _ClassVar[LifecycleStage]

class ViewType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VIEW_TYPE_ACTIVE_ONLY: _ClassVar[ViewType]
    VIEW_TYPE_DELETED_ONLY: _ClassVar[ViewType]
    VIEW_TYPE_ALL: _ClassVar[ViewType]

class RunStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATUS_UNSPECIFIED: _ClassVar[RunStatus]
    RUN_STATUS_RUNNING: _ClassVar[RunStatus]
    RUN_STATUS_SCHEDULED: _ClassVar[RunStatus]
    RUN_STATUS_FINISHED: _ClassVar[RunStatus]
    RUN_STATUS_FAILED: _ClassVar[RunStatus]
    RUN_STATUS_KILLED: _ClassVar[RunStatus]

class ModelVersionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_VERSION_STATUS_UNSPECIFIED: _ClassVar[ModelVersionStatus]
    MODEL_VERSION_STATUS_PENDING_REGISTRATION: _ClassVar[ModelVersionStatus]
    MODEL_VERSION_STATUS_READY: _ClassVar[ModelVersionStatus]
    MODEL_VERSION_STATUS_FAILED_REGISTRATION: _ClassVar[ModelVersionStatus]

class LineageDirection(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LINEAGE_DIRECTION_BOTH: _ClassVar[LineageDirection]
    LINEAGE_DIRECTION_UPSTREAM: _ClassVar[LineageDirection]
    LINEAGE_DIRECTION_DOWNSTREAM: _ClassVar[LineageDirection]
SECURABLE_TYPE_UNSPECIFIED: SecurableType
SECURABLE_TYPE_CATALOG: SecurableType
SECURABLE_TYPE_SCHEMA: SecurableType
SECURABLE_TYPE_REGISTERED_MODEL: SecurableType
SECURABLE_TYPE_EXPERIMENT: SecurableType
SECURABLE_TYPE_ENDPOINT: SecurableType
SECURABLE_TYPE_MONITOR: SecurableType
SECURABLE_TYPE_DATASET: SecurableType
PRIVILEGE_UNSPECIFIED: Privilege
PRIVILEGE_USE_CATALOG: Privilege
PRIVILEGE_USE_SCHEMA: Privilege
PRIVILEGE_CREATE_MODEL: Privilege
PRIVILEGE_EXECUTE: Privilege
PRIVILEGE_MODIFY: Privilege
PRIVILEGE_MANAGE: Privilege
PRIVILEGE_CREATE_SCHEMA: Privilege
PRIVILEGE_SELECT: Privilege
LIFECYCLE_STAGE_UNSPECIFIED: LifecycleStage
LIFECYCLE_STAGE_ACTIVE: LifecycleStage
LIFECYCLE_STAGE_DELETED: LifecycleStage
VIEW_TYPE_ACTIVE_ONLY: ViewType
VIEW_TYPE_DELETED_ONLY: ViewType
VIEW_TYPE_ALL: ViewType
RUN_STATUS_UNSPECIFIED: RunStatus
RUN_STATUS_RUNNING: RunStatus
RUN_STATUS_SCHEDULED: RunStatus
RUN_STATUS_FINISHED: RunStatus
RUN_STATUS_FAILED: RunStatus
RUN_STATUS_KILLED: RunStatus
MODEL_VERSION_STATUS_UNSPECIFIED: ModelVersionStatus
MODEL_VERSION_STATUS_PENDING_REGISTRATION: ModelVersionStatus
MODEL_VERSION_STATUS_READY: ModelVersionStatus
MODEL_VERSION_STATUS_FAILED_REGISTRATION: ModelVersionStatus
LINEAGE_DIRECTION_BOTH: LineageDirection
LINEAGE_DIRECTION_UPSTREAM: LineageDirection
LINEAGE_DIRECTION_DOWNSTREAM: LineageDirection

class DeleteResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Catalog(_message.Message):
    __slots__ = ("name", "comment", "owner", "created_at", "updated_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    comment: str
    owner: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., comment: _Optional[str] = ..., owner: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateCatalogRequest(_message.Message):
    __slots__ = ("name", "comment")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    comment: str
    def __init__(self, name: _Optional[str] = ..., comment: _Optional[str] = ...) -> None: ...

class GetCatalogRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListCatalogsRequest(_message.Message):
    __slots__ = ("page",)
    PAGE_FIELD_NUMBER: _ClassVar[int]
    page: _common_pb2.PageRequest
    def __init__(self, page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class ListCatalogsResponse(_message.Message):
    __slots__ = ("catalogs", "page")
    CATALOGS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    catalogs: _containers.RepeatedCompositeFieldContainer[Catalog]
    page: _common_pb2.PageResponse
    def __init__(self, catalogs: _Optional[_Iterable[_Union[Catalog, _Mapping]]] = ..., page: _Optional[_Union[_common_pb2.PageResponse, _Mapping]] = ...) -> None: ...

class DeleteCatalogRequest(_message.Message):
    __slots__ = ("name", "cascade")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CASCADE_FIELD_NUMBER: _ClassVar[int]
    name: str
    cascade: bool
    def __init__(self, name: _Optional[str] = ..., cascade: _Optional[bool] = ...) -> None: ...

class Schema(_message.Message):
    __slots__ = ("catalog_name", "name", "full_name", "comment", "owner", "created_at", "updated_at")
    CATALOG_NAME_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    FULL_NAME_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    catalog_name: str
    name: str
    full_name: str
    comment: str
    owner: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, catalog_name: _Optional[str] = ..., name: _Optional[str] = ..., full_name: _Optional[str] = ..., comment: _Optional[str] = ..., owner: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateSchemaRequest(_message.Message):
    __slots__ = ("catalog_name", "name", "comment")
    CATALOG_NAME_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    catalog_name: str
    name: str
    comment: str
    def __init__(self, catalog_name: _Optional[str] = ..., name: _Optional[str] = ..., comment: _Optional[str] = ...) -> None: ...

class GetSchemaRequest(_message.Message):
    __slots__ = ("full_name",)
    FULL_NAME_FIELD_NUMBER: _ClassVar[int]
    full_name: str
    def __init__(self, full_name: _Optional[str] = ...) -> None: ...

class ListSchemasRequest(_message.Message):
    __slots__ = ("catalog_name", "page")
    CATALOG_NAME_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    catalog_name: str
    page: _common_pb2.PageRequest
    def __init__(self, catalog_name: _Optional[str] = ..., page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class ListSchemasResponse(_message.Message):
    __slots__ = ("schemas", "page")
    SCHEMAS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    schemas: _containers.RepeatedCompositeFieldContainer[Schema]
    page: _common_pb2.PageResponse
    def __init__(self, schemas: _Optional[_Iterable[_Union[Schema, _Mapping]]] = ..., page: _Optional[_Union[_common_pb2.PageResponse, _Mapping]] = ...) -> None: ...

class DeleteSchemaRequest(_message.Message):
    __slots__ = ("full_name", "cascade")
    FULL_NAME_FIELD_NUMBER: _ClassVar[int]
    CASCADE_FIELD_NUMBER: _ClassVar[int]
    full_name: str
    cascade: bool
    def __init__(self, full_name: _Optional[str] = ..., cascade: _Optional[bool] = ...) -> None: ...

class Experiment(_message.Message):
    __slots__ = ("experiment_id", "name", "artifact_location", "lifecycle_stage", "owner", "tags", "creation_time_ms", "last_update_time_ms", "schema_full_name")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_LOCATION_FIELD_NUMBER: _ClassVar[int]
    LIFECYCLE_STAGE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CREATION_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_UPDATE_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FULL_NAME_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    name: str
    artifact_location: str
    lifecycle_stage: LifecycleStage
    owner: str
    tags: _containers.ScalarMap[str, str]
    creation_time_ms: int
    last_update_time_ms: int
    schema_full_name: str
    def __init__(self, experiment_id: _Optional[str] = ..., name: _Optional[str] = ..., artifact_location: _Optional[str] = ..., lifecycle_stage: _Optional[_Union[LifecycleStage, str]] = ..., owner: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ..., creation_time_ms: _Optional[int] = ..., last_update_time_ms: _Optional[int] = ..., schema_full_name: _Optional[str] = ...) -> None: ...

class CreateExperimentRequest(_message.Message):
    __slots__ = ("name", "artifact_location", "tags", "schema_full_name")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_LOCATION_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FULL_NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    artifact_location: str
    tags: _containers.ScalarMap[str, str]
    schema_full_name: str
    def __init__(self, name: _Optional[str] = ..., artifact_location: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ..., schema_full_name: _Optional[str] = ...) -> None: ...

class GetExperimentRequest(_message.Message):
    __slots__ = ("experiment_id", "name")
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    name: str
    def __init__(self, experiment_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class SearchExperimentsRequest(_message.Message):
    __slots__ = ("filter", "view_type", "order_by", "page")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    VIEW_TYPE_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    filter: str
    view_type: ViewType
    order_by: _containers.RepeatedScalarFieldContainer[str]
    page: _common_pb2.PageRequest
    def __init__(self, filter: _Optional[str] = ..., view_type: _Optional[_Union[ViewType, str]] = ..., order_by: _Optional[_Iterable[str]] = ..., page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class SearchExperimentsResponse(_message.Message):
    __slots__ = ("experiments", "page")
    EXPERIMENTS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    experiments: _containers.RepeatedCompositeFieldContainer[Experiment]
    page: _common_pb2.PageResponse
    def __init__(self, experiments: _Optional[_Iterable[_Union[Experiment, _Mapping]]] = ..., page: _Optional[_Union[_common_pb2.PageResponse, _Mapping]] = ...) -> None: ...

class DeleteExperimentRequest(_message.Message):
    __slots__ = ("experiment_id",)
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    def __init__(self, experiment_id: _Optional[str] = ...) -> None: ...

class RestoreExperimentRequest(_message.Message):
    __slots__ = ("experiment_id",)
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    def __init__(self, experiment_id: _Optional[str] = ...) -> None: ...

class SetExperimentTagRequest(_message.Message):
    __slots__ = ("experiment_id", "key", "value")
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    key: str
    value: str
    def __init__(self, experiment_id: _Optional[str] = ..., key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class Metric(_message.Message):
    __slots__ = ("key", "value", "step", "timestamp_ms")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: float
    step: int
    timestamp_ms: int
    def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ..., step: _Optional[int] = ..., timestamp_ms: _Optional[int] = ...) -> None: ...

class Param(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class RunTag(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class RunInfo(_message.Message):
    __slots__ = ("run_id", "run_name", "experiment_id", "user_id", "status", "start_time_ms", "end_time_ms", "artifact_uri", "lifecycle_stage")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_NAME_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    START_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    END_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_URI_FIELD_NUMBER: _ClassVar[int]
    LIFECYCLE_STAGE_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    run_name: str
    experiment_id: str
    user_id: str
    status: RunStatus
    start_time_ms: int
    end_time_ms: int
    artifact_uri: str
    lifecycle_stage: LifecycleStage
    def __init__(self, run_id: _Optional[str] = ..., run_name: _Optional[str] = ..., experiment_id: _Optional[str] = ..., user_id: _Optional[str] = ..., status: _Optional[_Union[RunStatus, str]] = ..., start_time_ms: _Optional[int] = ..., end_time_ms: _Optional[int] = ..., artifact_uri: _Optional[str] = ..., lifecycle_stage: _Optional[_Union[LifecycleStage, str]] = ...) -> None: ...

class RunData(_message.Message):
    __slots__ = ("metrics", "params", "tags")
    METRICS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    metrics: _containers.RepeatedCompositeFieldContainer[Metric]
    params: _containers.RepeatedCompositeFieldContainer[Param]
    tags: _containers.RepeatedCompositeFieldContainer[RunTag]
    def __init__(self, metrics: _Optional[_Iterable[_Union[Metric, _Mapping]]] = ..., params: _Optional[_Iterable[_Union[Param, _Mapping]]] = ..., tags: _Optional[_Iterable[_Union[RunTag, _Mapping]]] = ...) -> None: ...

class Run(_message.Message):
    __slots__ = ("info", "data")
    INFO_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    info: RunInfo
    data: RunData
    def __init__(self, info: _Optional[_Union[RunInfo, _Mapping]] = ..., data: _Optional[_Union[RunData, _Mapping]] = ...) -> None: ...

class CreateRunRequest(_message.Message):
    __slots__ = ("experiment_id", "run_name", "start_time_ms", "tags", "user_id")
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_NAME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    experiment_id: str
    run_name: str
    start_time_ms: int
    tags: _containers.RepeatedCompositeFieldContainer[RunTag]
    user_id: str
    def __init__(self, experiment_id: _Optional[str] = ..., run_name: _Optional[str] = ..., start_time_ms: _Optional[int] = ..., tags: _Optional[_Iterable[_Union[RunTag, _Mapping]]] = ..., user_id: _Optional[str] = ...) -> None: ...

class UpdateRunRequest(_message.Message):
    __slots__ = ("run_id", "status", "end_time_ms", "run_name")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    END_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    RUN_NAME_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    status: RunStatus
    end_time_ms: int
    run_name: str
    def __init__(self, run_id: _Optional[str] = ..., status: _Optional[_Union[RunStatus, str]] = ..., end_time_ms: _Optional[int] = ..., run_name: _Optional[str] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class SearchRunsRequest(_message.Message):
    __slots__ = ("experiment_ids", "filter", "view_type", "order_by", "page")
    EXPERIMENT_IDS_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    VIEW_TYPE_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    experiment_ids: _containers.RepeatedScalarFieldContainer[str]
    filter: str
    view_type: ViewType
    order_by: _containers.RepeatedScalarFieldContainer[str]
    page: _common_pb2.PageRequest
    def __init__(self, experiment_ids: _Optional[_Iterable[str]] = ..., filter: _Optional[str] = ..., view_type: _Optional[_Union[ViewType, str]] = ..., order_by: _Optional[_Iterable[str]] = ..., page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class SearchRunsResponse(_message.Message):
    __slots__ = ("runs", "page")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[Run]
    page: _common_pb2.PageResponse
    def __init__(self, runs: _Optional[_Iterable[_Union[Run, _Mapping]]] = ..., page: _Optional[_Union[_common_pb2.PageResponse, _Mapping]] = ...) -> None: ...

class DeleteRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class RestoreRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class LogBatchRequest(_message.Message):
    __slots__ = ("run_id", "metrics", "params", "tags")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    metrics: _containers.RepeatedCompositeFieldContainer[Metric]
    params: _containers.RepeatedCompositeFieldContainer[Param]
    tags: _containers.RepeatedCompositeFieldContainer[RunTag]
    def __init__(self, run_id: _Optional[str] = ..., metrics: _Optional[_Iterable[_Union[Metric, _Mapping]]] = ..., params: _Optional[_Iterable[_Union[Param, _Mapping]]] = ..., tags: _Optional[_Iterable[_Union[RunTag, _Mapping]]] = ...) -> None: ...

class LogBatchResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeleteRunTagRequest(_message.Message):
    __slots__ = ("run_id", "key")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    key: str
    def __init__(self, run_id: _Optional[str] = ..., key: _Optional[str] = ...) -> None: ...

class GetMetricHistoryRequest(_message.Message):
    __slots__ = ("run_id", "metric_key", "page", "max_points")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    METRIC_KEY_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    MAX_POINTS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    metric_key: str
    page: _common_pb2.PageRequest
    max_points: int
    def __init__(self, run_id: _Optional[str] = ..., metric_key: _Optional[str] = ..., page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ..., max_points: _Optional[int] = ...) -> None: ...

class GetMetricHistoryResponse(_message.Message):
    __slots__ = ("metrics", "page")
    METRICS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    metrics: _containers.RepeatedCompositeFieldContainer[Metric]
    page: _common_pb2.PageResponse
    def __init__(self, metrics: _Optional[_Iterable[_Union[Metric, _Mapping]]] = ..., page: _Optional[_Union[_common_pb2.PageResponse, _Mapping]] = ...) -> None: ...

class ModelAlias(_message.Message):
    __slots__ = ("alias", "version")
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    alias: str
    version: int
    def __init__(self, alias: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class RegisteredModel(_message.Message):
    __slots__ = ("full_name", "catalog_name", "schema_name", "name", "description", "owner", "tags", "aliases", "created_at", "updated_at", "latest_version")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    FULL_NAME_FIELD_NUMBER: _ClassVar[int]
    CATALOG_NAME_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_NAME_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    LATEST_VERSION_FIELD_NUMBER: _ClassVar[int]
    full_name: str
    catalog_name: str
    schema_name: str
    name: str
    description: str
    owner: str
    tags: _containers.ScalarMap[str, str]
    aliases: _containers.RepeatedCompositeFieldContainer[ModelAlias]
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    latest_version: int
    def __init__(self, full_name: _Optional[str] = ..., catalog_name: _Optional[str] = ..., schema_name: _Optional[str] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., owner: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ..., aliases: _Optional[_Iterable[_Union[ModelAlias, _Mapping]]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., latest_version: _Optional[int] = ...) -> None: ...

class CreateRegisteredModelRequest(_message.Message):
    __slots__ = ("full_name", "description", "tags")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    FULL_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    full_name: str
    description: str
    tags: _containers.ScalarMap[str, str]
    def __init__(self, full_name: _Optional[str] = ..., description: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ...) -> None: ...

class GetRegisteredModelRequest(_message.Message):
    __slots__ = ("full_name",)
    FULL_NAME_FIELD_NUMBER: _ClassVar[int]
    full_name: str
    def __init__(self, full_name: _Optional[str] = ...) -> None: ...

class SearchRegisteredModelsRequest(_message.Message):
    __slots__ = ("catalog_name", "schema_name", "name_contains", "page")
    CATALOG_NAME_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_NAME_FIELD_NUMBER: _ClassVar[int]
    NAME_CONTAINS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    catalog_name: str
    schema_name: str
    name_contains: str
    page: _common_pb2.PageRequest
    def __init__(self, catalog_name: _Optional[str] = ..., schema_name: _Optional[str] = ..., name_contains: _Optional[str] = ..., page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class SearchRegisteredModelsResponse(_message.Message):
    __slots__ = ("registered_models", "page")
    REGISTERED_MODELS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    registered_models: _containers.RepeatedCompositeFieldContainer[RegisteredModel]
    page: _common_pb2.PageResponse
    def __init__(self, registered_models: _Optional[_Iterable[_Union[RegisteredModel, _Mapping]]] = ..., page: _Optional[_Union[_common_pb2.PageResponse, _Mapping]] = ...) -> None: ...

class UpdateRegisteredModelRequest(_message.Message):
    __slots__ = ("full_name", "description", "set_tags", "delete_tags")
    class SetTagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    FULL_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SET_TAGS_FIELD_NUMBER: _ClassVar[int]
    DELETE_TAGS_FIELD_NUMBER: _ClassVar[int]
    full_name: str
    description: str
    set_tags: _containers.ScalarMap[str, str]
    delete_tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, full_name: _Optional[str] = ..., description: _Optional[str] = ..., set_tags: _Optional[_Mapping[str, str]] = ..., delete_tags: _Optional[_Iterable[str]] = ...) -> None: ...

class RenameRegisteredModelRequest(_message.Message):
    __slots__ = ("full_name", "new_name")
    FULL_NAME_FIELD_NUMBER: _ClassVar[int]
    NEW_NAME_FIELD_NUMBER: _ClassVar[int]
    full_name: str
    new_name: str
    def __init__(self, full_name: _Optional[str] = ..., new_name: _Optional[str] = ...) -> None: ...

class DeleteRegisteredModelRequest(_message.Message):
    __slots__ = ("full_name",)
    FULL_NAME_FIELD_NUMBER: _ClassVar[int]
    full_name: str
    def __init__(self, full_name: _Optional[str] = ...) -> None: ...

class ModelVersion(_message.Message):
    __slots__ = ("model_name", "version", "source", "run_id", "status", "status_message", "description", "created_by", "created_at", "updated_at", "tags", "aliases", "storage_location", "model_id")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUS_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    STORAGE_LOCATION_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: int
    source: str
    run_id: str
    status: ModelVersionStatus
    status_message: str
    description: str
    created_by: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    tags: _containers.ScalarMap[str, str]
    aliases: _containers.RepeatedScalarFieldContainer[str]
    storage_location: str
    model_id: str
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[int] = ..., source: _Optional[str] = ..., run_id: _Optional[str] = ..., status: _Optional[_Union[ModelVersionStatus, str]] = ..., status_message: _Optional[str] = ..., description: _Optional[str] = ..., created_by: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tags: _Optional[_Mapping[str, str]] = ..., aliases: _Optional[_Iterable[str]] = ..., storage_location: _Optional[str] = ..., model_id: _Optional[str] = ...) -> None: ...

class ModelVersionRef(_message.Message):
    __slots__ = ("model_name", "version")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: int
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class CreateModelVersionRequest(_message.Message):
    __slots__ = ("model_name", "source", "run_id", "description", "tags")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    source: str
    run_id: str
    description: str
    tags: _containers.ScalarMap[str, str]
    def __init__(self, model_name: _Optional[str] = ..., source: _Optional[str] = ..., run_id: _Optional[str] = ..., description: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ...) -> None: ...

class FinalizeModelVersionRequest(_message.Message):
    __slots__ = ("model_name", "version")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: int
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class GetModelVersionRequest(_message.Message):
    __slots__ = ("model_name", "version")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: int
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class SearchModelVersionsRequest(_message.Message):
    __slots__ = ("model_name", "run_id", "page")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    run_id: str
    page: _common_pb2.PageRequest
    def __init__(self, model_name: _Optional[str] = ..., run_id: _Optional[str] = ..., page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class SearchModelVersionsResponse(_message.Message):
    __slots__ = ("model_versions", "page")
    MODEL_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    model_versions: _containers.RepeatedCompositeFieldContainer[ModelVersion]
    page: _common_pb2.PageResponse
    def __init__(self, model_versions: _Optional[_Iterable[_Union[ModelVersion, _Mapping]]] = ..., page: _Optional[_Union[_common_pb2.PageResponse, _Mapping]] = ...) -> None: ...

class UpdateModelVersionRequest(_message.Message):
    __slots__ = ("model_name", "version", "description", "set_tags", "delete_tags")
    class SetTagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SET_TAGS_FIELD_NUMBER: _ClassVar[int]
    DELETE_TAGS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: int
    description: str
    set_tags: _containers.ScalarMap[str, str]
    delete_tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[int] = ..., description: _Optional[str] = ..., set_tags: _Optional[_Mapping[str, str]] = ..., delete_tags: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteModelVersionRequest(_message.Message):
    __slots__ = ("model_name", "version")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: int
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class SetModelAliasRequest(_message.Message):
    __slots__ = ("model_name", "alias", "version")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    alias: str
    version: int
    def __init__(self, model_name: _Optional[str] = ..., alias: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class DeleteModelAliasRequest(_message.Message):
    __slots__ = ("model_name", "alias")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    alias: str
    def __init__(self, model_name: _Optional[str] = ..., alias: _Optional[str] = ...) -> None: ...

class GetModelVersionByAliasRequest(_message.Message):
    __slots__ = ("model_name", "alias")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    alias: str
    def __init__(self, model_name: _Optional[str] = ..., alias: _Optional[str] = ...) -> None: ...

class ListAliasHistoryRequest(_message.Message):
    __slots__ = ("model_name", "alias", "page")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    alias: str
    page: _common_pb2.PageRequest
    def __init__(self, model_name: _Optional[str] = ..., alias: _Optional[str] = ..., page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class AliasHistoryEntry(_message.Message):
    __slots__ = ("alias", "action", "version", "previous_version", "actor", "at")
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ACTION_UNSPECIFIED: _ClassVar[AliasHistoryEntry.Action]
        SET: _ClassVar[AliasHistoryEntry.Action]
        DELETED: _ClassVar[AliasHistoryEntry.Action]
    ACTION_UNSPECIFIED: AliasHistoryEntry.Action
    SET: AliasHistoryEntry.Action
    DELETED: AliasHistoryEntry.Action
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    alias: str
    action: AliasHistoryEntry.Action
    version: int
    previous_version: int
    actor: str
    at: _timestamp_pb2.Timestamp
    def __init__(self, alias: _Optional[str] = ..., action: _Optional[_Union[AliasHistoryEntry.Action, str]] = ..., version: _Optional[int] = ..., previous_version: _Optional[int] = ..., actor: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListAliasHistoryResponse(_message.Message):
    __slots__ = ("entries", "page")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[AliasHistoryEntry]
    page: _common_pb2.PageResponse
    def __init__(self, entries: _Optional[_Iterable[_Union[AliasHistoryEntry, _Mapping]]] = ..., page: _Optional[_Union[_common_pb2.PageResponse, _Mapping]] = ...) -> None: ...

class ArtifactTarget(_message.Message):
    __slots__ = ("run_id", "model_version", "logged_model_id")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    LOGGED_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    model_version: ModelVersionRef
    logged_model_id: str
    def __init__(self, run_id: _Optional[str] = ..., model_version: _Optional[_Union[ModelVersionRef, _Mapping]] = ..., logged_model_id: _Optional[str] = ...) -> None: ...

class FileInfo(_message.Message):
    __slots__ = ("path", "is_dir", "size")
    PATH_FIELD_NUMBER: _ClassVar[int]
    IS_DIR_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    path: str
    is_dir: bool
    size: int
    def __init__(self, path: _Optional[str] = ..., is_dir: _Optional[bool] = ..., size: _Optional[int] = ...) -> None: ...

class ListArtifactsRequest(_message.Message):
    __slots__ = ("target", "path")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    target: ArtifactTarget
    path: str
    def __init__(self, target: _Optional[_Union[ArtifactTarget, _Mapping]] = ..., path: _Optional[str] = ...) -> None: ...

class ListArtifactsResponse(_message.Message):
    __slots__ = ("files",)
    FILES_FIELD_NUMBER: _ClassVar[int]
    files: _containers.RepeatedCompositeFieldContainer[FileInfo]
    def __init__(self, files: _Optional[_Iterable[_Union[FileInfo, _Mapping]]] = ...) -> None: ...

class DownloadArtifactsRequest(_message.Message):
    __slots__ = ("target", "path", "chunk_size")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    target: ArtifactTarget
    path: str
    chunk_size: int
    def __init__(self, target: _Optional[_Union[ArtifactTarget, _Mapping]] = ..., path: _Optional[str] = ..., chunk_size: _Optional[int] = ...) -> None: ...

class ArtifactChunk(_message.Message):
    __slots__ = ("path", "data", "offset", "file_size")
    PATH_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    FILE_SIZE_FIELD_NUMBER: _ClassVar[int]
    path: str
    data: bytes
    offset: int
    file_size: int
    def __init__(self, path: _Optional[str] = ..., data: _Optional[bytes] = ..., offset: _Optional[int] = ..., file_size: _Optional[int] = ...) -> None: ...

class UploadArtifactsRequest(_message.Message):
    __slots__ = ("target", "chunk")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    target: ArtifactTarget
    chunk: ArtifactChunk
    def __init__(self, target: _Optional[_Union[ArtifactTarget, _Mapping]] = ..., chunk: _Optional[_Union[ArtifactChunk, _Mapping]] = ...) -> None: ...

class UploadArtifactsResponse(_message.Message):
    __slots__ = ("files_written", "bytes_written")
    FILES_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    BYTES_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    files_written: int
    bytes_written: int
    def __init__(self, files_written: _Optional[int] = ..., bytes_written: _Optional[int] = ...) -> None: ...

class LineageNode(_message.Message):
    __slots__ = ("type", "name")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    type: str
    name: str
    def __init__(self, type: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class LineageEdge(_message.Message):
    __slots__ = ("source", "target", "properties", "created_by", "created_at")
    class PropertiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    source: LineageNode
    target: LineageNode
    properties: _containers.ScalarMap[str, str]
    created_by: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, source: _Optional[_Union[LineageNode, _Mapping]] = ..., target: _Optional[_Union[LineageNode, _Mapping]] = ..., properties: _Optional[_Mapping[str, str]] = ..., created_by: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateLineageEdgeRequest(_message.Message):
    __slots__ = ("source", "target", "properties")
    class PropertiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    source: LineageNode
    target: LineageNode
    properties: _containers.ScalarMap[str, str]
    def __init__(self, source: _Optional[_Union[LineageNode, _Mapping]] = ..., target: _Optional[_Union[LineageNode, _Mapping]] = ..., properties: _Optional[_Mapping[str, str]] = ...) -> None: ...

class DeleteLineageEdgeRequest(_message.Message):
    __slots__ = ("source", "target")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    source: LineageNode
    target: LineageNode
    def __init__(self, source: _Optional[_Union[LineageNode, _Mapping]] = ..., target: _Optional[_Union[LineageNode, _Mapping]] = ...) -> None: ...

class GetLineageRequest(_message.Message):
    __slots__ = ("node", "direction", "max_depth")
    NODE_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    MAX_DEPTH_FIELD_NUMBER: _ClassVar[int]
    node: LineageNode
    direction: LineageDirection
    max_depth: int
    def __init__(self, node: _Optional[_Union[LineageNode, _Mapping]] = ..., direction: _Optional[_Union[LineageDirection, str]] = ..., max_depth: _Optional[int] = ...) -> None: ...

class GetLineageResponse(_message.Message):
    __slots__ = ("nodes", "edges")
    NODES_FIELD_NUMBER: _ClassVar[int]
    EDGES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[LineageNode]
    edges: _containers.RepeatedCompositeFieldContainer[LineageEdge]
    def __init__(self, nodes: _Optional[_Iterable[_Union[LineageNode, _Mapping]]] = ..., edges: _Optional[_Iterable[_Union[LineageEdge, _Mapping]]] = ...) -> None: ...

class PrivilegeAssignment(_message.Message):
    __slots__ = ("principal", "privileges")
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    PRIVILEGES_FIELD_NUMBER: _ClassVar[int]
    principal: str
    privileges: _containers.RepeatedScalarFieldContainer[Privilege]
    def __init__(self, principal: _Optional[str] = ..., privileges: _Optional[_Iterable[_Union[Privilege, str]]] = ...) -> None: ...

class GrantRequest(_message.Message):
    __slots__ = ("securable_type", "securable_full_name", "principal", "privileges")
    SECURABLE_TYPE_FIELD_NUMBER: _ClassVar[int]
    SECURABLE_FULL_NAME_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    PRIVILEGES_FIELD_NUMBER: _ClassVar[int]
    securable_type: SecurableType
    securable_full_name: str
    principal: str
    privileges: _containers.RepeatedScalarFieldContainer[Privilege]
    def __init__(self, securable_type: _Optional[_Union[SecurableType, str]] = ..., securable_full_name: _Optional[str] = ..., principal: _Optional[str] = ..., privileges: _Optional[_Iterable[_Union[Privilege, str]]] = ...) -> None: ...

class RevokeRequest(_message.Message):
    __slots__ = ("securable_type", "securable_full_name", "principal", "privileges")
    SECURABLE_TYPE_FIELD_NUMBER: _ClassVar[int]
    SECURABLE_FULL_NAME_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    PRIVILEGES_FIELD_NUMBER: _ClassVar[int]
    securable_type: SecurableType
    securable_full_name: str
    principal: str
    privileges: _containers.RepeatedScalarFieldContainer[Privilege]
    def __init__(self, securable_type: _Optional[_Union[SecurableType, str]] = ..., securable_full_name: _Optional[str] = ..., principal: _Optional[str] = ..., privileges: _Optional[_Iterable[_Union[Privilege, str]]] = ...) -> None: ...

class RegisterSecurableRequest(_message.Message):
    __slots__ = ("securable_type", "securable_full_name", "owner")
    SECURABLE_TYPE_FIELD_NUMBER: _ClassVar[int]
    SECURABLE_FULL_NAME_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    securable_type: SecurableType
    securable_full_name: str
    owner: str
    def __init__(self, securable_type: _Optional[_Union[SecurableType, str]] = ..., securable_full_name: _Optional[str] = ..., owner: _Optional[str] = ...) -> None: ...

class RegisterSecurableResponse(_message.Message):
    __slots__ = ("securable_type", "securable_full_name", "owner", "created_at")
    SECURABLE_TYPE_FIELD_NUMBER: _ClassVar[int]
    SECURABLE_FULL_NAME_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    securable_type: SecurableType
    securable_full_name: str
    owner: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, securable_type: _Optional[_Union[SecurableType, str]] = ..., securable_full_name: _Optional[str] = ..., owner: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TouchSecurableRequest(_message.Message):
    __slots__ = ("securable_type", "securable_full_name", "actor")
    SECURABLE_TYPE_FIELD_NUMBER: _ClassVar[int]
    SECURABLE_FULL_NAME_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    securable_type: SecurableType
    securable_full_name: str
    actor: str
    def __init__(self, securable_type: _Optional[_Union[SecurableType, str]] = ..., securable_full_name: _Optional[str] = ..., actor: _Optional[str] = ...) -> None: ...

class UnregisterSecurableRequest(_message.Message):
    __slots__ = ("securable_type", "securable_full_name", "actor")
    SECURABLE_TYPE_FIELD_NUMBER: _ClassVar[int]
    SECURABLE_FULL_NAME_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    securable_type: SecurableType
    securable_full_name: str
    actor: str
    def __init__(self, securable_type: _Optional[_Union[SecurableType, str]] = ..., securable_full_name: _Optional[str] = ..., actor: _Optional[str] = ...) -> None: ...

class ListGrantsRequest(_message.Message):
    __slots__ = ("securable_type", "securable_full_name", "principal")
    SECURABLE_TYPE_FIELD_NUMBER: _ClassVar[int]
    SECURABLE_FULL_NAME_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    securable_type: SecurableType
    securable_full_name: str
    principal: str
    def __init__(self, securable_type: _Optional[_Union[SecurableType, str]] = ..., securable_full_name: _Optional[str] = ..., principal: _Optional[str] = ...) -> None: ...

class ListGrantsResponse(_message.Message):
    __slots__ = ("assignments", "owner")
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    assignments: _containers.RepeatedCompositeFieldContainer[PrivilegeAssignment]
    owner: str
    def __init__(self, assignments: _Optional[_Iterable[_Union[PrivilegeAssignment, _Mapping]]] = ..., owner: _Optional[str] = ...) -> None: ...

class SetOwnerRequest(_message.Message):
    __slots__ = ("securable_type", "securable_full_name", "new_owner")
    SECURABLE_TYPE_FIELD_NUMBER: _ClassVar[int]
    SECURABLE_FULL_NAME_FIELD_NUMBER: _ClassVar[int]
    NEW_OWNER_FIELD_NUMBER: _ClassVar[int]
    securable_type: SecurableType
    securable_full_name: str
    new_owner: str
    def __init__(self, securable_type: _Optional[_Union[SecurableType, str]] = ..., securable_full_name: _Optional[str] = ..., new_owner: _Optional[str] = ...) -> None: ...

class SetOwnerResponse(_message.Message):
    __slots__ = ("owner",)
    OWNER_FIELD_NUMBER: _ClassVar[int]
    owner: str
    def __init__(self, owner: _Optional[str] = ...) -> None: ...

class CheckPrivilegeRequest(_message.Message):
    __slots__ = ("principal", "securable_type", "securable_full_name", "privilege")
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    SECURABLE_TYPE_FIELD_NUMBER: _ClassVar[int]
    SECURABLE_FULL_NAME_FIELD_NUMBER: _ClassVar[int]
    PRIVILEGE_FIELD_NUMBER: _ClassVar[int]
    principal: str
    securable_type: SecurableType
    securable_full_name: str
    privilege: Privilege
    def __init__(self, principal: _Optional[str] = ..., securable_type: _Optional[_Union[SecurableType, str]] = ..., securable_full_name: _Optional[str] = ..., privilege: _Optional[_Union[Privilege, str]] = ...) -> None: ...

class CheckPrivilegeResponse(_message.Message):
    __slots__ = ("allowed", "reason")
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    allowed: bool
    reason: str
    def __init__(self, allowed: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...
