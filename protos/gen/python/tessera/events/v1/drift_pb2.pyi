import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DriftEvent(_message.Message):
    __slots__ = ("event_id", "kind", "monitor_id", "endpoint", "feature", "slice", "statistic", "value", "threshold", "window_start", "window_end", "comparison", "baseline", "detected_at")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[DriftEvent.Kind]
        DRIFT_DETECTED: _ClassVar[DriftEvent.Kind]
        DRIFT_RESOLVED: _ClassVar[DriftEvent.Kind]
    KIND_UNSPECIFIED: DriftEvent.Kind
    DRIFT_DETECTED: DriftEvent.Kind
    DRIFT_RESOLVED: DriftEvent.Kind
    class Comparison(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        COMPARISON_UNSPECIFIED: _ClassVar[DriftEvent.Comparison]
        BASELINE: _ClassVar[DriftEvent.Comparison]
        PREVIOUS_WINDOW: _ClassVar[DriftEvent.Comparison]
    COMPARISON_UNSPECIFIED: DriftEvent.Comparison
    BASELINE: DriftEvent.Comparison
    PREVIOUS_WINDOW: DriftEvent.Comparison
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MONITOR_ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    SLICE_FIELD_NUMBER: _ClassVar[int]
    STATISTIC_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    COMPARISON_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    DETECTED_AT_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    kind: DriftEvent.Kind
    monitor_id: str
    endpoint: str
    feature: str
    slice: str
    statistic: str
    value: float
    threshold: float
    window_start: _timestamp_pb2.Timestamp
    window_end: _timestamp_pb2.Timestamp
    comparison: DriftEvent.Comparison
    baseline: str
    detected_at: _timestamp_pb2.Timestamp
    def __init__(self, event_id: _Optional[str] = ..., kind: _Optional[_Union[DriftEvent.Kind, str]] = ..., monitor_id: _Optional[str] = ..., endpoint: _Optional[str] = ..., feature: _Optional[str] = ..., slice: _Optional[str] = ..., statistic: _Optional[str] = ..., value: _Optional[float] = ..., threshold: _Optional[float] = ..., window_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., comparison: _Optional[_Union[DriftEvent.Comparison, str]] = ..., baseline: _Optional[str] = ..., detected_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
