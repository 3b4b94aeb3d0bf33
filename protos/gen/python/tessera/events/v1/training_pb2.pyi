import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrainingJob(_message.Message):
    __slots__ = ("job_id", "requested_by", "queued_at")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_BY_FIELD_NUMBER: _ClassVar[int]
    QUEUED_AT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    requested_by: str
    queued_at: _timestamp_pb2.Timestamp
    def __init__(self, job_id: _Optional[str] = ..., requested_by: _Optional[str] = ..., queued_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TrainingEvent(_message.Message):
    __slots__ = ("event_id", "job_id", "type", "run_id", "step", "metrics", "checkpoint_uri", "model_name", "model_version", "error_message", "at", "total_steps", "worker")
    class Type(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        TYPE_UNSPECIFIED: _ClassVar[TrainingEvent.Type]
        STARTED: _ClassVar[TrainingEvent.Type]
        PROGRESS: _ClassVar[TrainingEvent.Type]
        CHECKPOINT: _ClassVar[TrainingEvent.Type]
        SUCCEEDED: _ClassVar[TrainingEvent.Type]
        FAILED: _ClassVar[TrainingEvent.Type]
        CANCELLED: _ClassVar[TrainingEvent.Type]
        RESUMED: _ClassVar[TrainingEvent.Type]
    TYPE_UNSPECIFIED: TrainingEvent.Type
    STARTED: TrainingEvent.Type
    PROGRESS: TrainingEvent.Type
    CHECKPOINT: TrainingEvent.Type
    SUCCEEDED: TrainingEvent.Type
    FAILED: TrainingEvent.Type
    CANCELLED: TrainingEvent.Type
    RESUMED: TrainingEvent.Type
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_URI_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    job_id: str
    type: TrainingEvent.Type
    run_id: str
    step: int
    metrics: _containers.ScalarMap[str, float]
    checkpoint_uri: str
    model_name: str
    model_version: int
    error_message: str
    at: _timestamp_pb2.Timestamp
    total_steps: int
    worker: str
    def __init__(self, event_id: _Optional[str] = ..., job_id: _Optional[str] = ..., type: _Optional[_Union[TrainingEvent.Type, str]] = ..., run_id: _Optional[str] = ..., step: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., checkpoint_uri: _Optional[str] = ..., model_name: _Optional[str] = ..., model_version: _Optional[int] = ..., error_message: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., total_steps: _Optional[int] = ..., worker: _Optional[str] = ...) -> None: ...
