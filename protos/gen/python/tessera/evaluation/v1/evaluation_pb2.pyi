from tessera.common.v1 import common_pb2 as _common_pb2
from tessera.events.v1 import evaluation_pb2 as _evaluation_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EvalRun(_message.Message):
    __slots__ = ("request", "state", "summary")
    class SummaryEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    request: _evaluation_pb2.EvalRequest
    state: str
    summary: _containers.ScalarMap[str, float]
    def __init__(self, request: _Optional[_Union[_evaluation_pb2.EvalRequest, _Mapping]] = ..., state: _Optional[str] = ..., summary: _Optional[_Mapping[str, float]] = ...) -> None: ...

class StartEvalRunRequest(_message.Message):
    __slots__ = ("request",)
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    request: _evaluation_pb2.EvalRequest
    def __init__(self, request: _Optional[_Union[_evaluation_pb2.EvalRequest, _Mapping]] = ...) -> None: ...

class GetEvalRunRequest(_message.Message):
    __slots__ = ("eval_run_id",)
    EVAL_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    eval_run_id: str
    def __init__(self, eval_run_id: _Optional[str] = ...) -> None: ...

class ListEvalResultsRequest(_message.Message):
    __slots__ = ("eval_run_id", "page")
    EVAL_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    eval_run_id: str
    page: _common_pb2.PageRequest
    def __init__(self, eval_run_id: _Optional[str] = ..., page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class ListEvalResultsResponse(_message.Message):
    __slots__ = ("results", "page")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[_evaluation_pb2.EvalResult]
    page: _common_pb2.PageResponse
    def __init__(self, results: _Optional[_Iterable[_Union[_evaluation_pb2.EvalResult, _Mapping]]] = ..., page: _Optional[_Union[_common_pb2.PageResponse, _Mapping]] = ...) -> None: ...
