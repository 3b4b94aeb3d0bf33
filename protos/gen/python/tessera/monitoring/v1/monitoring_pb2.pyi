import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from tessera.common.v1 import common_pb2 as _common_pb2
from tessera.events.v1 import drift_pb2 as _drift_pb2
from tessera.events.v1 import payload_log_pb2 as _payload_log_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FeatureKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEATURE_KIND_AUTO: _ClassVar[FeatureKind]
    NUMERIC: _ClassVar[FeatureKind]
    CATEGORICAL: _ClassVar[FeatureKind]
FEATURE_KIND_AUTO: FeatureKind
NUMERIC: FeatureKind
CATEGORICAL: FeatureKind

class ListInferenceRecordsRequest(_message.Message):
    __slots__ = ("endpoint", "start_time", "end_time", "status", "page")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    status: str
    page: _common_pb2.PageRequest
    def __init__(self, endpoint: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., status: _Optional[str] = ..., page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class ListInferenceRecordsResponse(_message.Message):
    __slots__ = ("records", "page")
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[_payload_log_pb2.PayloadLog]
    page: _common_pb2.PageResponse
    def __init__(self, records: _Optional[_Iterable[_Union[_payload_log_pb2.PayloadLog, _Mapping]]] = ..., page: _Optional[_Union[_common_pb2.PageResponse, _Mapping]] = ...) -> None: ...

class FeatureSpec(_message.Message):
    __slots__ = ("path", "kind")
    PATH_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    path: str
    kind: FeatureKind
    def __init__(self, path: _Optional[str] = ..., kind: _Optional[_Union[FeatureKind, str]] = ...) -> None: ...

class FeatureProfile(_message.Message):
    __slots__ = ("feature", "kind", "slice", "count", "nulls", "mean", "std", "min", "max", "quantiles", "bucket_keys", "bucket_counts", "categories", "m2", "window_start", "window_end")
    class CategoriesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SLICE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    NULLS_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    QUANTILES_FIELD_NUMBER: _ClassVar[int]
    BUCKET_KEYS_FIELD_NUMBER: _ClassVar[int]
    BUCKET_COUNTS_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    M2_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    feature: str
    kind: FeatureKind
    slice: str
    count: int
    nulls: int
    mean: float
    std: float
    min: float
    max: float
    quantiles: _containers.RepeatedScalarFieldContainer[float]
    bucket_keys: _containers.RepeatedScalarFieldContainer[int]
    bucket_counts: _containers.RepeatedScalarFieldContainer[int]
    categories: _containers.ScalarMap[str, int]
    m2: float
    window_start: _timestamp_pb2.Timestamp
    window_end: _timestamp_pb2.Timestamp
    def __init__(self, feature: _Optional[str] = ..., kind: _Optional[_Union[FeatureKind, str]] = ..., slice: _Optional[str] = ..., count: _Optional[int] = ..., nulls: _Optional[int] = ..., mean: _Optional[float] = ..., std: _Optional[float] = ..., min: _Optional[float] = ..., max: _Optional[float] = ..., quantiles: _Optional[_Iterable[float]] = ..., bucket_keys: _Optional[_Iterable[int]] = ..., bucket_counts: _Optional[_Iterable[int]] = ..., categories: _Optional[_Mapping[str, int]] = ..., m2: _Optional[float] = ..., window_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Baseline(_message.Message):
    __slots__ = ("time_range", "reference")
    TIME_RANGE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    time_range: TimeRange
    reference: ReferenceProfiles
    def __init__(self, time_range: _Optional[_Union[TimeRange, _Mapping]] = ..., reference: _Optional[_Union[ReferenceProfiles, _Mapping]] = ...) -> None: ...

class TimeRange(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: _timestamp_pb2.Timestamp
    end: _timestamp_pb2.Timestamp
    def __init__(self, start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ReferenceProfiles(_message.Message):
    __slots__ = ("profiles", "values")
    PROFILES_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    profiles: _containers.RepeatedCompositeFieldContainer[FeatureProfile]
    values: _containers.RepeatedCompositeFieldContainer[ReferenceValues]
    def __init__(self, profiles: _Optional[_Iterable[_Union[FeatureProfile, _Mapping]]] = ..., values: _Optional[_Iterable[_Union[ReferenceValues, _Mapping]]] = ...) -> None: ...

class ReferenceValues(_message.Message):
    __slots__ = ("feature", "numbers", "categories")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    NUMBERS_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    feature: str
    numbers: _containers.RepeatedScalarFieldContainer[float]
    categories: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, feature: _Optional[str] = ..., numbers: _Optional[_Iterable[float]] = ..., categories: _Optional[_Iterable[str]] = ...) -> None: ...

class Thresholds(_message.Message):
    __slots__ = ("values", "resolve_ratio", "min_window_count", "significance")
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    VALUES_FIELD_NUMBER: _ClassVar[int]
    RESOLVE_RATIO_FIELD_NUMBER: _ClassVar[int]
    MIN_WINDOW_COUNT_FIELD_NUMBER: _ClassVar[int]
    SIGNIFICANCE_FIELD_NUMBER: _ClassVar[int]
    values: _containers.ScalarMap[str, float]
    resolve_ratio: float
    min_window_count: int
    significance: float
    def __init__(self, values: _Optional[_Mapping[str, float]] = ..., resolve_ratio: _Optional[float] = ..., min_window_count: _Optional[int] = ..., significance: _Optional[float] = ...) -> None: ...

class Monitor(_message.Message):
    __slots__ = ("monitor_id", "endpoint", "features", "slices", "window_seconds", "baseline", "thresholds", "alert_on_previous_window", "created_at")
    MONITOR_ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    SLICES_FIELD_NUMBER: _ClassVar[int]
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    ALERT_ON_PREVIOUS_WINDOW_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    monitor_id: str
    endpoint: str
    features: _containers.RepeatedCompositeFieldContainer[FeatureSpec]
    slices: _containers.RepeatedScalarFieldContainer[str]
    window_seconds: int
    baseline: Baseline
    thresholds: Thresholds
    alert_on_previous_window: bool
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, monitor_id: _Optional[str] = ..., endpoint: _Optional[str] = ..., features: _Optional[_Iterable[_Union[FeatureSpec, _Mapping]]] = ..., slices: _Optional[_Iterable[str]] = ..., window_seconds: _Optional[int] = ..., baseline: _Optional[_Union[Baseline, _Mapping]] = ..., thresholds: _Optional[_Union[Thresholds, _Mapping]] = ..., alert_on_previous_window: _Optional[bool] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateMonitorRequest(_message.Message):
    __slots__ = ("monitor",)
    MONITOR_FIELD_NUMBER: _ClassVar[int]
    monitor: Monitor
    def __init__(self, monitor: _Optional[_Union[Monitor, _Mapping]] = ...) -> None: ...

class GetMonitorRequest(_message.Message):
    __slots__ = ("monitor_id",)
    MONITOR_ID_FIELD_NUMBER: _ClassVar[int]
    monitor_id: str
    def __init__(self, monitor_id: _Optional[str] = ...) -> None: ...

class ListMonitorsRequest(_message.Message):
    __slots__ = ("endpoint",)
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    def __init__(self, endpoint: _Optional[str] = ...) -> None: ...

class ListMonitorsResponse(_message.Message):
    __slots__ = ("monitors",)
    MONITORS_FIELD_NUMBER: _ClassVar[int]
    monitors: _containers.RepeatedCompositeFieldContainer[Monitor]
    def __init__(self, monitors: _Optional[_Iterable[_Union[Monitor, _Mapping]]] = ...) -> None: ...

class DeleteMonitorRequest(_message.Message):
    __slots__ = ("monitor_id",)
    MONITOR_ID_FIELD_NUMBER: _ClassVar[int]
    monitor_id: str
    def __init__(self, monitor_id: _Optional[str] = ...) -> None: ...

class DeleteMonitorResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetProfilesRequest(_message.Message):
    __slots__ = ("monitor_id", "start_time", "end_time", "feature", "slice", "merge")
    MONITOR_ID_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    SLICE_FIELD_NUMBER: _ClassVar[int]
    MERGE_FIELD_NUMBER: _ClassVar[int]
    monitor_id: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    feature: str
    slice: str
    merge: bool
    def __init__(self, monitor_id: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., feature: _Optional[str] = ..., slice: _Optional[str] = ..., merge: _Optional[bool] = ...) -> None: ...

class GetProfilesResponse(_message.Message):
    __slots__ = ("profiles",)
    PROFILES_FIELD_NUMBER: _ClassVar[int]
    profiles: _containers.RepeatedCompositeFieldContainer[FeatureProfile]
    def __init__(self, profiles: _Optional[_Iterable[_Union[FeatureProfile, _Mapping]]] = ...) -> None: ...

class DriftMetric(_message.Message):
    __slots__ = ("window_start", "window_end", "feature", "slice", "statistic", "value", "comparison", "threshold", "drifted", "count")
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    SLICE_FIELD_NUMBER: _ClassVar[int]
    STATISTIC_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    COMPARISON_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    DRIFTED_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    window_start: _timestamp_pb2.Timestamp
    window_end: _timestamp_pb2.Timestamp
    feature: str
    slice: str
    statistic: str
    value: float
    comparison: _drift_pb2.DriftEvent.Comparison
    threshold: float
    drifted: bool
    count: int
    def __init__(self, window_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., feature: _Optional[str] = ..., slice: _Optional[str] = ..., statistic: _Optional[str] = ..., value: _Optional[float] = ..., comparison: _Optional[_Union[_drift_pb2.DriftEvent.Comparison, str]] = ..., threshold: _Optional[float] = ..., drifted: _Optional[bool] = ..., count: _Optional[int] = ...) -> None: ...

class ListDriftMetricsRequest(_message.Message):
    __slots__ = ("monitor_id", "start_time", "end_time", "feature", "statistic")
    MONITOR_ID_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    STATISTIC_FIELD_NUMBER: _ClassVar[int]
    monitor_id: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    feature: str
    statistic: str
    def __init__(self, monitor_id: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., feature: _Optional[str] = ..., statistic: _Optional[str] = ...) -> None: ...

class ListDriftMetricsResponse(_message.Message):
    __slots__ = ("metrics",)
    METRICS_FIELD_NUMBER: _ClassVar[int]
    metrics: _containers.RepeatedCompositeFieldContainer[DriftMetric]
    def __init__(self, metrics: _Optional[_Iterable[_Union[DriftMetric, _Mapping]]] = ...) -> None: ...

class ListDriftEventsRequest(_message.Message):
    __slots__ = ("monitor_id",)
    MONITOR_ID_FIELD_NUMBER: _ClassVar[int]
    monitor_id: str
    def __init__(self, monitor_id: _Optional[str] = ...) -> None: ...

class ListDriftEventsResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[_drift_pb2.DriftEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[_drift_pb2.DriftEvent, _Mapping]]] = ...) -> None: ...

class ListQualityMetricsRequest(_message.Message):
    __slots__ = ("endpoint", "metric", "start_time", "end_time", "page")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    metric: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    page: _common_pb2.PageRequest
    def __init__(self, endpoint: _Optional[str] = ..., metric: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class QualityMetric(_message.Message):
    __slots__ = ("endpoint", "metric", "kind", "online_evaluation_id", "eval_run_id", "window_start", "window_end", "value", "measured", "unmeasured", "coverage")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ONLINE_EVALUATION_ID_FIELD_NUMBER: _ClassVar[int]
    EVAL_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    MEASURED_FIELD_NUMBER: _ClassVar[int]
    UNMEASURED_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    metric: str
    kind: str
    online_evaluation_id: str
    eval_run_id: str
    window_start: _timestamp_pb2.Timestamp
    window_end: _timestamp_pb2.Timestamp
    value: float
    measured: int
    unmeasured: int
    coverage: float
    def __init__(self, endpoint: _Optional[str] = ..., metric: _Optional[str] = ..., kind: _Optional[str] = ..., online_evaluation_id: _Optional[str] = ..., eval_run_id: _Optional[str] = ..., window_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., value: _Optional[float] = ..., measured: _Optional[int] = ..., unmeasured: _Optional[int] = ..., coverage: _Optional[float] = ...) -> None: ...

class ListQualityMetricsResponse(_message.Message):
    __slots__ = ("metrics", "page")
    METRICS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    metrics: _containers.RepeatedCompositeFieldContainer[QualityMetric]
    page: _common_pb2.PageResponse
    def __init__(self, metrics: _Optional[_Iterable[_Union[QualityMetric, _Mapping]]] = ..., page: _Optional[_Union[_common_pb2.PageResponse, _Mapping]] = ...) -> None: ...
