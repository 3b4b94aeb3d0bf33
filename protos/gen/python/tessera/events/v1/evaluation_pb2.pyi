import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EvalRequest(_message.Message):
    __slots__ = ("eval_run_id", "dataset", "endpoint", "retrieval_index", "metrics", "requested_by", "requested_at")
    EVAL_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_INDEX_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_BY_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    eval_run_id: str
    dataset: str
    endpoint: str
    retrieval_index: str
    metrics: _containers.RepeatedScalarFieldContainer[str]
    requested_by: str
    requested_at: _timestamp_pb2.Timestamp
    def __init__(self, eval_run_id: _Optional[str] = ..., dataset: _Optional[str] = ..., endpoint: _Optional[str] = ..., retrieval_index: _Optional[str] = ..., metrics: _Optional[_Iterable[str]] = ..., requested_by: _Optional[str] = ..., requested_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class EvalResult(_message.Message):
    __slots__ = ("eval_run_id", "example_id", "scores", "latency_ms", "prompt_tokens", "completion_tokens", "status", "error_message", "at")
    class ScoresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    EVAL_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    EXAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    eval_run_id: str
    example_id: str
    scores: _containers.ScalarMap[str, float]
    latency_ms: float
    prompt_tokens: int
    completion_tokens: int
    status: str
    error_message: str
    at: _timestamp_pb2.Timestamp
    def __init__(self, eval_run_id: _Optional[str] = ..., example_id: _Optional[str] = ..., scores: _Optional[_Mapping[str, float]] = ..., latency_ms: _Optional[float] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., status: _Optional[str] = ..., error_message: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
