import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from tessera.events.v1 import serving_pb2 as _serving_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EvalRunSpec(_message.Message):
    __slots__ = ("eval_run_id", "dataset", "dataset_version", "target_endpoint", "metrics", "judge_endpoint", "repeats", "concurrency", "seed", "sampling", "k", "experiment", "human_label_column", "tags")
    class TagsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EVAL_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    DATASET_VERSION_FIELD_NUMBER: _ClassVar[int]
    TARGET_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    JUDGE_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    REPEATS_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    HUMAN_LABEL_COLUMN_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    eval_run_id: str
    dataset: str
    dataset_version: str
    target_endpoint: str
    metrics: _containers.RepeatedScalarFieldContainer[str]
    judge_endpoint: str
    repeats: int
    concurrency: int
    seed: int
    sampling: _serving_pb2.SamplingParams
    k: int
    experiment: str
    human_label_column: str
    tags: _containers.ScalarMap[str, str]
    def __init__(self, eval_run_id: _Optional[str] = ..., dataset: _Optional[str] = ..., dataset_version: _Optional[str] = ..., target_endpoint: _Optional[str] = ..., metrics: _Optional[_Iterable[str]] = ..., judge_endpoint: _Optional[str] = ..., repeats: _Optional[int] = ..., concurrency: _Optional[int] = ..., seed: _Optional[int] = ..., sampling: _Optional[_Union[_serving_pb2.SamplingParams, _Mapping]] = ..., k: _Optional[int] = ..., experiment: _Optional[str] = ..., human_label_column: _Optional[str] = ..., tags: _Optional[_Mapping[str, str]] = ...) -> None: ...

class EvalRequest(_message.Message):
    __slots__ = ("spec", "auth_token", "requested_at")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    AUTH_TOKEN_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    spec: EvalRunSpec
    auth_token: str
    requested_at: _timestamp_pb2.Timestamp
    def __init__(self, spec: _Optional[_Union[EvalRunSpec, _Mapping]] = ..., auth_token: _Optional[str] = ..., requested_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class MetricValue(_message.Message):
    __slots__ = ("metric", "value", "judge_reply", "unmeasured_reason", "measured", "unmeasured")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    JUDGE_REPLY_FIELD_NUMBER: _ClassVar[int]
    UNMEASURED_REASON_FIELD_NUMBER: _ClassVar[int]
    MEASURED_FIELD_NUMBER: _ClassVar[int]
    UNMEASURED_FIELD_NUMBER: _ClassVar[int]
    metric: str
    value: float
    judge_reply: str
    unmeasured_reason: str
    measured: int
    unmeasured: int
    def __init__(self, metric: _Optional[str] = ..., value: _Optional[float] = ..., judge_reply: _Optional[str] = ..., unmeasured_reason: _Optional[str] = ..., measured: _Optional[int] = ..., unmeasured: _Optional[int] = ...) -> None: ...

class EvalResult(_message.Message):
    __slots__ = ("eval_run_id", "example_id", "repeat", "metrics", "response", "retrieved_ids", "latency_ms", "prompt_tokens", "completion_tokens", "cost_usd", "request_id", "status", "error_message", "at", "target_endpoint", "online_evaluation_id", "window_start", "window_end")
    EVAL_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    EXAMPLE_ID_FIELD_NUMBER: _ClassVar[int]
    REPEAT_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    RETRIEVED_IDS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    TARGET_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    ONLINE_EVALUATION_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    eval_run_id: str
    example_id: str
    repeat: int
    metrics: _containers.RepeatedCompositeFieldContainer[MetricValue]
    response: str
    retrieved_ids: _containers.RepeatedScalarFieldContainer[str]
    latency_ms: float
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    request_id: str
    status: str
    error_message: str
    at: _timestamp_pb2.Timestamp
    target_endpoint: str
    online_evaluation_id: str
    window_start: _timestamp_pb2.Timestamp
    window_end: _timestamp_pb2.Timestamp
    def __init__(self, eval_run_id: _Optional[str] = ..., example_id: _Optional[str] = ..., repeat: _Optional[int] = ..., metrics: _Optional[_Iterable[_Union[MetricValue, _Mapping]]] = ..., response: _Optional[str] = ..., retrieved_ids: _Optional[_Iterable[str]] = ..., latency_ms: _Optional[float] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., cost_usd: _Optional[float] = ..., request_id: _Optional[str] = ..., status: _Optional[str] = ..., error_message: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., target_endpoint: _Optional[str] = ..., online_evaluation_id: _Optional[str] = ..., window_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
