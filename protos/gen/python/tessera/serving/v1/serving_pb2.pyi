import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from tessera.common.v1 import common_pb2 as _common_pb2
from tessera.events.v1 import serving_pb2 as _serving_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ServedModel(_message.Message):
    __slots__ = ("model_name", "version", "alias", "traffic_percent", "engine")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_PERCENT_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: int
    alias: str
    traffic_percent: int
    engine: EngineSettings
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[int] = ..., alias: _Optional[str] = ..., traffic_percent: _Optional[int] = ..., engine: _Optional[_Union[EngineSettings, _Mapping]] = ...) -> None: ...

class EngineSettings(_message.Message):
    __slots__ = ("max_model_len", "max_num_seqs", "kv_cache_mib", "enable_prefix_caching", "max_loras", "max_lora_rank")
    MAX_MODEL_LEN_FIELD_NUMBER: _ClassVar[int]
    MAX_NUM_SEQS_FIELD_NUMBER: _ClassVar[int]
    KV_CACHE_MIB_FIELD_NUMBER: _ClassVar[int]
    ENABLE_PREFIX_CACHING_FIELD_NUMBER: _ClassVar[int]
    MAX_LORAS_FIELD_NUMBER: _ClassVar[int]
    MAX_LORA_RANK_FIELD_NUMBER: _ClassVar[int]
    max_model_len: int
    max_num_seqs: int
    kv_cache_mib: int
    enable_prefix_caching: bool
    max_loras: int
    max_lora_rank: int
    def __init__(self, max_model_len: _Optional[int] = ..., max_num_seqs: _Optional[int] = ..., kv_cache_mib: _Optional[int] = ..., enable_prefix_caching: _Optional[bool] = ..., max_loras: _Optional[int] = ..., max_lora_rank: _Optional[int] = ...) -> None: ...

class ServedModelStatus(_message.Message):
    __slots__ = ("model_name", "alias", "version", "state", "state_reason", "runtime", "traffic_percent", "base_model", "base_version")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_REASON_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    TRAFFIC_PERCENT_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    alias: str
    version: int
    state: str
    state_reason: str
    runtime: str
    traffic_percent: int
    base_model: str
    base_version: int
    def __init__(self, model_name: _Optional[str] = ..., alias: _Optional[str] = ..., version: _Optional[int] = ..., state: _Optional[str] = ..., state_reason: _Optional[str] = ..., runtime: _Optional[str] = ..., traffic_percent: _Optional[int] = ..., base_model: _Optional[str] = ..., base_version: _Optional[int] = ...) -> None: ...

class Endpoint(_message.Message):
    __slots__ = ("name", "served_models", "state", "state_reason", "status", "max_concurrency", "created_by", "created_at", "updated_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SERVED_MODELS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_REASON_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    served_models: _containers.RepeatedCompositeFieldContainer[ServedModel]
    state: str
    state_reason: str
    status: _containers.RepeatedCompositeFieldContainer[ServedModelStatus]
    max_concurrency: int
    created_by: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., served_models: _Optional[_Iterable[_Union[ServedModel, _Mapping]]] = ..., state: _Optional[str] = ..., state_reason: _Optional[str] = ..., status: _Optional[_Iterable[_Union[ServedModelStatus, _Mapping]]] = ..., max_concurrency: _Optional[int] = ..., created_by: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateEndpointRequest(_message.Message):
    __slots__ = ("name", "served_models", "max_concurrency", "wait")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SERVED_MODELS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    name: str
    served_models: _containers.RepeatedCompositeFieldContainer[ServedModel]
    max_concurrency: int
    wait: bool
    def __init__(self, name: _Optional[str] = ..., served_models: _Optional[_Iterable[_Union[ServedModel, _Mapping]]] = ..., max_concurrency: _Optional[int] = ..., wait: _Optional[bool] = ...) -> None: ...

class UpdateEndpointRequest(_message.Message):
    __slots__ = ("name", "served_models", "max_concurrency", "wait")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SERVED_MODELS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    name: str
    served_models: _containers.RepeatedCompositeFieldContainer[ServedModel]
    max_concurrency: int
    wait: bool
    def __init__(self, name: _Optional[str] = ..., served_models: _Optional[_Iterable[_Union[ServedModel, _Mapping]]] = ..., max_concurrency: _Optional[int] = ..., wait: _Optional[bool] = ...) -> None: ...

class DeleteEndpointRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteEndpointResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetEndpointRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListEndpointsRequest(_message.Message):
    __slots__ = ("page",)
    PAGE_FIELD_NUMBER: _ClassVar[int]
    page: _common_pb2.PageRequest
    def __init__(self, page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class ListEndpointsResponse(_message.Message):
    __slots__ = ("endpoints", "page")
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    endpoints: _containers.RepeatedCompositeFieldContainer[Endpoint]
    page: _common_pb2.PageResponse
    def __init__(self, endpoints: _Optional[_Iterable[_Union[Endpoint, _Mapping]]] = ..., page: _Optional[_Union[_common_pb2.PageResponse, _Mapping]] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("endpoint", "prompt", "chat", "sampling", "request_id")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    CHAT_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    prompt: str
    chat: _serving_pb2.ChatList
    sampling: _serving_pb2.SamplingParams
    request_id: str
    def __init__(self, endpoint: _Optional[str] = ..., prompt: _Optional[str] = ..., chat: _Optional[_Union[_serving_pb2.ChatList, _Mapping]] = ..., sampling: _Optional[_Union[_serving_pb2.SamplingParams, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("request_id", "text", "finish_reason", "prompt_tokens", "completion_tokens", "served_model", "model_version", "citations")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SERVED_MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CITATIONS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    served_model: str
    model_version: str
    citations: _containers.RepeatedCompositeFieldContainer[_serving_pb2.Citation]
    def __init__(self, request_id: _Optional[str] = ..., text: _Optional[str] = ..., finish_reason: _Optional[str] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., served_model: _Optional[str] = ..., model_version: _Optional[str] = ..., citations: _Optional[_Iterable[_Union[_serving_pb2.Citation, _Mapping]]] = ...) -> None: ...

class GenerateChunk(_message.Message):
    __slots__ = ("request_id", "text_delta", "finish_reason", "prompt_tokens", "completion_tokens", "served_model", "model_version", "citations")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_DELTA_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SERVED_MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CITATIONS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    text_delta: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    served_model: str
    model_version: str
    citations: _containers.RepeatedCompositeFieldContainer[_serving_pb2.Citation]
    def __init__(self, request_id: _Optional[str] = ..., text_delta: _Optional[str] = ..., finish_reason: _Optional[str] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., served_model: _Optional[str] = ..., model_version: _Optional[str] = ..., citations: _Optional[_Iterable[_Union[_serving_pb2.Citation, _Mapping]]] = ...) -> None: ...

class UsageLimit(_message.Message):
    __slots__ = ("endpoint", "principal", "metric", "period", "limit", "every_endpoint")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    PERIOD_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    EVERY_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    principal: str
    metric: str
    period: str
    limit: float
    every_endpoint: bool
    def __init__(self, endpoint: _Optional[str] = ..., principal: _Optional[str] = ..., metric: _Optional[str] = ..., period: _Optional[str] = ..., limit: _Optional[float] = ..., every_endpoint: _Optional[bool] = ...) -> None: ...

class SetUsageLimitRequest(_message.Message):
    __slots__ = ("limit", "remove")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    limit: UsageLimit
    remove: bool
    def __init__(self, limit: _Optional[_Union[UsageLimit, _Mapping]] = ..., remove: _Optional[bool] = ...) -> None: ...

class ListUsageLimitsRequest(_message.Message):
    __slots__ = ("endpoint", "every_endpoint")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    EVERY_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    every_endpoint: bool
    def __init__(self, endpoint: _Optional[str] = ..., every_endpoint: _Optional[bool] = ...) -> None: ...

class ListUsageLimitsResponse(_message.Message):
    __slots__ = ("limits",)
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    limits: _containers.RepeatedCompositeFieldContainer[UsageLimit]
    def __init__(self, limits: _Optional[_Iterable[_Union[UsageLimit, _Mapping]]] = ...) -> None: ...

class GetUsageRequest(_message.Message):
    __slots__ = ("endpoint", "principal", "start", "end")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    principal: str
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    def __init__(self, endpoint: _Optional[str] = ..., principal: _Optional[str] = ..., start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class UsageRow(_message.Message):
    __slots__ = ("day", "endpoint", "principal", "served_model", "requests", "prompt_tokens", "completion_tokens", "cost_usd", "unpriced_requests")
    DAY_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    SERVED_MODEL_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    UNPRICED_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    day: str
    endpoint: str
    principal: str
    served_model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    unpriced_requests: int
    def __init__(self, day: _Optional[str] = ..., endpoint: _Optional[str] = ..., principal: _Optional[str] = ..., served_model: _Optional[str] = ..., requests: _Optional[int] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., cost_usd: _Optional[float] = ..., unpriced_requests: _Optional[int] = ...) -> None: ...

class GetUsageResponse(_message.Message):
    __slots__ = ("rows",)
    ROWS_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedCompositeFieldContainer[UsageRow]
    def __init__(self, rows: _Optional[_Iterable[_Union[UsageRow, _Mapping]]] = ...) -> None: ...
