import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from tessera.common.v1 import common_pb2 as _common_pb2
from tessera.events.v1 import evaluation_pb2 as _evaluation_pb2
from tessera.events.v1 import serving_pb2 as _serving_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATE_UNSPECIFIED: _ClassVar[RunState]
    RUN_STATE_QUEUED: _ClassVar[RunState]
    RUN_STATE_RUNNING: _ClassVar[RunState]
    RUN_STATE_SUCCEEDED: _ClassVar[RunState]
    RUN_STATE_PARTIAL: _ClassVar[RunState]
    RUN_STATE_FAILED: _ClassVar[RunState]
    RUN_STATE_CANCELLED: _ClassVar[RunState]

class AssessmentKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ASSESSMENT_KIND_UNSPECIFIED: _ClassVar[AssessmentKind]
    ASSESSMENT_KIND_LABEL: _ClassVar[AssessmentKind]
    ASSESSMENT_KIND_PREFERENCE: _ClassVar[AssessmentKind]

class Verdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERDICT_UNSPECIFIED: _ClassVar[Verdict]
    VERDICT_GOOD: _ClassVar[Verdict]
    VERDICT_BAD: _ClassVar[Verdict]

class Preference(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PREFERENCE_UNSPECIFIED: _ClassVar[Preference]
    PREFERENCE_A: _ClassVar[Preference]
    PREFERENCE_B: _ClassVar[Preference]
    PREFERENCE_TIE: _ClassVar[Preference]
    PREFERENCE_BOTH_BAD: _ClassVar[Preference]
RUN_STATE_UNSPECIFIED: RunState
RUN_STATE_QUEUED: RunState
RUN_STATE_RUNNING: RunState
RUN_STATE_SUCCEEDED: RunState
RUN_STATE_PARTIAL: RunState
RUN_STATE_FAILED: RunState
RUN_STATE_CANCELLED: RunState
ASSESSMENT_KIND_UNSPECIFIED: AssessmentKind
ASSESSMENT_KIND_LABEL: AssessmentKind
ASSESSMENT_KIND_PREFERENCE: AssessmentKind
VERDICT_UNSPECIFIED: Verdict
VERDICT_GOOD: Verdict
VERDICT_BAD: Verdict
PREFERENCE_UNSPECIFIED: Preference
PREFERENCE_A: Preference
PREFERENCE_B: Preference
PREFERENCE_TIE: Preference
PREFERENCE_BOTH_BAD: Preference

class Interval(_message.Message):
    __slots__ = ("estimate", "low", "high", "method", "n", "confidence")
    ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    estimate: float
    low: float
    high: float
    method: str
    n: int
    confidence: float
    def __init__(self, estimate: _Optional[float] = ..., low: _Optional[float] = ..., high: _Optional[float] = ..., method: _Optional[str] = ..., n: _Optional[int] = ..., confidence: _Optional[float] = ...) -> None: ...

class MetricSummary(_message.Message):
    __slots__ = ("metric", "interval", "measured", "unmeasured", "coverage", "per_repeat", "prompt_hash", "prompt_version")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_FIELD_NUMBER: _ClassVar[int]
    MEASURED_FIELD_NUMBER: _ClassVar[int]
    UNMEASURED_FIELD_NUMBER: _ClassVar[int]
    COVERAGE_FIELD_NUMBER: _ClassVar[int]
    PER_REPEAT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_HASH_FIELD_NUMBER: _ClassVar[int]
    PROMPT_VERSION_FIELD_NUMBER: _ClassVar[int]
    metric: str
    interval: Interval
    measured: int
    unmeasured: int
    coverage: float
    per_repeat: _containers.RepeatedCompositeFieldContainer[Interval]
    prompt_hash: str
    prompt_version: str
    def __init__(self, metric: _Optional[str] = ..., interval: _Optional[_Union[Interval, _Mapping]] = ..., measured: _Optional[int] = ..., unmeasured: _Optional[int] = ..., coverage: _Optional[float] = ..., per_repeat: _Optional[_Iterable[_Union[Interval, _Mapping]]] = ..., prompt_hash: _Optional[str] = ..., prompt_version: _Optional[str] = ...) -> None: ...

class LatencySummary(_message.Message):
    __slots__ = ("p50_ms", "p95_ms", "mean_ms")
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    P95_MS_FIELD_NUMBER: _ClassVar[int]
    MEAN_MS_FIELD_NUMBER: _ClassVar[int]
    p50_ms: float
    p95_ms: float
    mean_ms: float
    def __init__(self, p50_ms: _Optional[float] = ..., p95_ms: _Optional[float] = ..., mean_ms: _Optional[float] = ...) -> None: ...

class Manifest(_message.Message):
    __slots__ = ("dataset", "dataset_version", "target_endpoint", "target_models", "judge_endpoint", "judge_models", "prompt_hashes", "sampling", "seed", "repeats", "service_version")
    class PromptHashesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DATASET_FIELD_NUMBER: _ClassVar[int]
    DATASET_VERSION_FIELD_NUMBER: _ClassVar[int]
    TARGET_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    TARGET_MODELS_FIELD_NUMBER: _ClassVar[int]
    JUDGE_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    JUDGE_MODELS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_HASHES_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    REPEATS_FIELD_NUMBER: _ClassVar[int]
    SERVICE_VERSION_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    dataset_version: str
    target_endpoint: str
    target_models: _containers.RepeatedScalarFieldContainer[str]
    judge_endpoint: str
    judge_models: _containers.RepeatedScalarFieldContainer[str]
    prompt_hashes: _containers.ScalarMap[str, str]
    sampling: _serving_pb2.SamplingParams
    seed: int
    repeats: int
    service_version: str
    def __init__(self, dataset: _Optional[str] = ..., dataset_version: _Optional[str] = ..., target_endpoint: _Optional[str] = ..., target_models: _Optional[_Iterable[str]] = ..., judge_endpoint: _Optional[str] = ..., judge_models: _Optional[_Iterable[str]] = ..., prompt_hashes: _Optional[_Mapping[str, str]] = ..., sampling: _Optional[_Union[_serving_pb2.SamplingParams, _Mapping]] = ..., seed: _Optional[int] = ..., repeats: _Optional[int] = ..., service_version: _Optional[str] = ...) -> None: ...

class EvalRun(_message.Message):
    __slots__ = ("eval_run_id", "spec", "state", "created_by", "created_at", "finished_at", "completed", "total", "failed", "metrics", "latency", "prompt_tokens", "completion_tokens", "cost_usd", "mlflow_run_id", "experiment_id", "manifest", "calibrations", "error_message")
    EVAL_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COST_USD_FIELD_NUMBER: _ClassVar[int]
    MLFLOW_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_ID_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    CALIBRATIONS_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    eval_run_id: str
    spec: _evaluation_pb2.EvalRunSpec
    state: RunState
    created_by: str
    created_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    completed: int
    total: int
    failed: int
    metrics: _containers.RepeatedCompositeFieldContainer[MetricSummary]
    latency: LatencySummary
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    mlflow_run_id: str
    experiment_id: str
    manifest: Manifest
    calibrations: _containers.RepeatedCompositeFieldContainer[JudgeCalibration]
    error_message: str
    def __init__(self, eval_run_id: _Optional[str] = ..., spec: _Optional[_Union[_evaluation_pb2.EvalRunSpec, _Mapping]] = ..., state: _Optional[_Union[RunState, str]] = ..., created_by: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., completed: _Optional[int] = ..., total: _Optional[int] = ..., failed: _Optional[int] = ..., metrics: _Optional[_Iterable[_Union[MetricSummary, _Mapping]]] = ..., latency: _Optional[_Union[LatencySummary, _Mapping]] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., cost_usd: _Optional[float] = ..., mlflow_run_id: _Optional[str] = ..., experiment_id: _Optional[str] = ..., manifest: _Optional[_Union[Manifest, _Mapping]] = ..., calibrations: _Optional[_Iterable[_Union[JudgeCalibration, _Mapping]]] = ..., error_message: _Optional[str] = ...) -> None: ...

class StartEvalRunRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: _evaluation_pb2.EvalRunSpec
    def __init__(self, spec: _Optional[_Union[_evaluation_pb2.EvalRunSpec, _Mapping]] = ...) -> None: ...

class GetEvalRunRequest(_message.Message):
    __slots__ = ("eval_run_id",)
    EVAL_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    eval_run_id: str
    def __init__(self, eval_run_id: _Optional[str] = ...) -> None: ...

class ListEvalRunsRequest(_message.Message):
    __slots__ = ("dataset", "target_endpoint", "page")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    TARGET_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    target_endpoint: str
    page: _common_pb2.PageRequest
    def __init__(self, dataset: _Optional[str] = ..., target_endpoint: _Optional[str] = ..., page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class ListEvalRunsResponse(_message.Message):
    __slots__ = ("runs", "page")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[EvalRun]
    page: _common_pb2.PageResponse
    def __init__(self, runs: _Optional[_Iterable[_Union[EvalRun, _Mapping]]] = ..., page: _Optional[_Union[_common_pb2.PageResponse, _Mapping]] = ...) -> None: ...

class CancelEvalRunRequest(_message.Message):
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

class CompareRunsRequest(_message.Message):
    __slots__ = ("baseline_run_id", "candidate_run_id", "confidence")
    BASELINE_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    baseline_run_id: str
    candidate_run_id: str
    confidence: float
    def __init__(self, baseline_run_id: _Optional[str] = ..., candidate_run_id: _Optional[str] = ..., confidence: _Optional[float] = ...) -> None: ...

class PairedDifference(_message.Message):
    __slots__ = ("metric", "difference", "test", "p_value", "significant", "minimum_detectable_difference", "detectable", "paired", "unpaired", "baseline_only", "candidate_only", "row_differences")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    DIFFERENCE_FIELD_NUMBER: _ClassVar[int]
    TEST_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    SIGNIFICANT_FIELD_NUMBER: _ClassVar[int]
    MINIMUM_DETECTABLE_DIFFERENCE_FIELD_NUMBER: _ClassVar[int]
    DETECTABLE_FIELD_NUMBER: _ClassVar[int]
    PAIRED_FIELD_NUMBER: _ClassVar[int]
    UNPAIRED_FIELD_NUMBER: _ClassVar[int]
    BASELINE_ONLY_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    ROW_DIFFERENCES_FIELD_NUMBER: _ClassVar[int]
    metric: str
    difference: Interval
    test: str
    p_value: float
    significant: bool
    minimum_detectable_difference: float
    detectable: bool
    paired: int
    unpaired: int
    baseline_only: int
    candidate_only: int
    row_differences: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, metric: _Optional[str] = ..., difference: _Optional[_Union[Interval, _Mapping]] = ..., test: _Optional[str] = ..., p_value: _Optional[float] = ..., significant: _Optional[bool] = ..., minimum_detectable_difference: _Optional[float] = ..., detectable: _Optional[bool] = ..., paired: _Optional[int] = ..., unpaired: _Optional[int] = ..., baseline_only: _Optional[int] = ..., candidate_only: _Optional[int] = ..., row_differences: _Optional[_Iterable[float]] = ...) -> None: ...

class RunComparison(_message.Message):
    __slots__ = ("baseline_run_id", "candidate_run_id", "differences")
    BASELINE_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    DIFFERENCES_FIELD_NUMBER: _ClassVar[int]
    baseline_run_id: str
    candidate_run_id: str
    differences: _containers.RepeatedCompositeFieldContainer[PairedDifference]
    def __init__(self, baseline_run_id: _Optional[str] = ..., candidate_run_id: _Optional[str] = ..., differences: _Optional[_Iterable[_Union[PairedDifference, _Mapping]]] = ...) -> None: ...

class Assessment(_message.Message):
    __slots__ = ("assessment_id", "kind", "endpoint", "request_id", "verdict", "expected_response", "guideline", "comment", "prompt", "endpoint_a", "endpoint_b", "request_id_a", "request_id_b", "sides_swapped", "preference", "created_by", "created_at")
    ASSESSMENT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    GUIDELINE_FIELD_NUMBER: _ClassVar[int]
    COMMENT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_A_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_B_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_A_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_B_FIELD_NUMBER: _ClassVar[int]
    SIDES_SWAPPED_FIELD_NUMBER: _ClassVar[int]
    PREFERENCE_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    assessment_id: str
    kind: AssessmentKind
    endpoint: str
    request_id: str
    verdict: Verdict
    expected_response: str
    guideline: str
    comment: str
    prompt: str
    endpoint_a: str
    endpoint_b: str
    request_id_a: str
    request_id_b: str
    sides_swapped: bool
    preference: Preference
    created_by: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, assessment_id: _Optional[str] = ..., kind: _Optional[_Union[AssessmentKind, str]] = ..., endpoint: _Optional[str] = ..., request_id: _Optional[str] = ..., verdict: _Optional[_Union[Verdict, str]] = ..., expected_response: _Optional[str] = ..., guideline: _Optional[str] = ..., comment: _Optional[str] = ..., prompt: _Optional[str] = ..., endpoint_a: _Optional[str] = ..., endpoint_b: _Optional[str] = ..., request_id_a: _Optional[str] = ..., request_id_b: _Optional[str] = ..., sides_swapped: _Optional[bool] = ..., preference: _Optional[_Union[Preference, str]] = ..., created_by: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateAssessmentRequest(_message.Message):
    __slots__ = ("assessment",)
    ASSESSMENT_FIELD_NUMBER: _ClassVar[int]
    assessment: Assessment
    def __init__(self, assessment: _Optional[_Union[Assessment, _Mapping]] = ...) -> None: ...

class ListAssessmentsRequest(_message.Message):
    __slots__ = ("kind", "endpoint", "page")
    KIND_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    kind: AssessmentKind
    endpoint: str
    page: _common_pb2.PageRequest
    def __init__(self, kind: _Optional[_Union[AssessmentKind, str]] = ..., endpoint: _Optional[str] = ..., page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class ListAssessmentsResponse(_message.Message):
    __slots__ = ("assessments", "page")
    ASSESSMENTS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    assessments: _containers.RepeatedCompositeFieldContainer[Assessment]
    page: _common_pb2.PageResponse
    def __init__(self, assessments: _Optional[_Iterable[_Union[Assessment, _Mapping]]] = ..., page: _Optional[_Union[_common_pb2.PageResponse, _Mapping]] = ...) -> None: ...

class SaveAssessmentsAsDatasetRequest(_message.Message):
    __slots__ = ("endpoint", "dataset", "since")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    dataset: str
    since: _timestamp_pb2.Timestamp
    def __init__(self, endpoint: _Optional[str] = ..., dataset: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SaveAssessmentsAsDatasetResponse(_message.Message):
    __slots__ = ("dataset", "version", "row_count")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    version: str
    row_count: int
    def __init__(self, dataset: _Optional[str] = ..., version: _Optional[str] = ..., row_count: _Optional[int] = ...) -> None: ...

class ConfusionMatrix(_message.Message):
    __slots__ = ("counts",)
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    counts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, counts: _Optional[_Iterable[int]] = ...) -> None: ...

class JudgeCalibration(_message.Message):
    __slots__ = ("metric", "prompt_hash", "judge_model", "n", "agreement", "cohen_kappa", "confusion", "note")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    PROMPT_HASH_FIELD_NUMBER: _ClassVar[int]
    JUDGE_MODEL_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_FIELD_NUMBER: _ClassVar[int]
    COHEN_KAPPA_FIELD_NUMBER: _ClassVar[int]
    CONFUSION_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    metric: str
    prompt_hash: str
    judge_model: str
    n: int
    agreement: float
    cohen_kappa: float
    confusion: ConfusionMatrix
    note: str
    def __init__(self, metric: _Optional[str] = ..., prompt_hash: _Optional[str] = ..., judge_model: _Optional[str] = ..., n: _Optional[int] = ..., agreement: _Optional[float] = ..., cohen_kappa: _Optional[float] = ..., confusion: _Optional[_Union[ConfusionMatrix, _Mapping]] = ..., note: _Optional[str] = ...) -> None: ...

class CalibrateJudgeRequest(_message.Message):
    __slots__ = ("eval_run_id", "metric", "label_column")
    EVAL_RUN_ID_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    LABEL_COLUMN_FIELD_NUMBER: _ClassVar[int]
    eval_run_id: str
    metric: str
    label_column: str
    def __init__(self, eval_run_id: _Optional[str] = ..., metric: _Optional[str] = ..., label_column: _Optional[str] = ...) -> None: ...

class OnlineEvaluation(_message.Message):
    __slots__ = ("online_evaluation_id", "endpoint", "metrics", "judge_endpoint", "sample_rate", "interval_seconds", "max_rows_per_window", "created_by", "created_at", "last_window_end", "latest")
    ONLINE_EVALUATION_ID_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    JUDGE_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_ROWS_PER_WINDOW_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    LATEST_FIELD_NUMBER: _ClassVar[int]
    online_evaluation_id: str
    endpoint: str
    metrics: _containers.RepeatedScalarFieldContainer[str]
    judge_endpoint: str
    sample_rate: float
    interval_seconds: int
    max_rows_per_window: int
    created_by: str
    created_at: _timestamp_pb2.Timestamp
    last_window_end: _timestamp_pb2.Timestamp
    latest: _containers.RepeatedCompositeFieldContainer[MetricSummary]
    def __init__(self, online_evaluation_id: _Optional[str] = ..., endpoint: _Optional[str] = ..., metrics: _Optional[_Iterable[str]] = ..., judge_endpoint: _Optional[str] = ..., sample_rate: _Optional[float] = ..., interval_seconds: _Optional[int] = ..., max_rows_per_window: _Optional[int] = ..., created_by: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_window_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., latest: _Optional[_Iterable[_Union[MetricSummary, _Mapping]]] = ...) -> None: ...

class CreateOnlineEvaluationRequest(_message.Message):
    __slots__ = ("online_evaluation",)
    ONLINE_EVALUATION_FIELD_NUMBER: _ClassVar[int]
    online_evaluation: OnlineEvaluation
    def __init__(self, online_evaluation: _Optional[_Union[OnlineEvaluation, _Mapping]] = ...) -> None: ...

class ListOnlineEvaluationsRequest(_message.Message):
    __slots__ = ("endpoint", "page")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    page: _common_pb2.PageRequest
    def __init__(self, endpoint: _Optional[str] = ..., page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class ListOnlineEvaluationsResponse(_message.Message):
    __slots__ = ("online_evaluations", "page")
    ONLINE_EVALUATIONS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    online_evaluations: _containers.RepeatedCompositeFieldContainer[OnlineEvaluation]
    page: _common_pb2.PageResponse
    def __init__(self, online_evaluations: _Optional[_Iterable[_Union[OnlineEvaluation, _Mapping]]] = ..., page: _Optional[_Union[_common_pb2.PageResponse, _Mapping]] = ...) -> None: ...

class DeleteOnlineEvaluationRequest(_message.Message):
    __slots__ = ("online_evaluation_id",)
    ONLINE_EVALUATION_ID_FIELD_NUMBER: _ClassVar[int]
    online_evaluation_id: str
    def __init__(self, online_evaluation_id: _Optional[str] = ...) -> None: ...

class DeleteOnlineEvaluationResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
