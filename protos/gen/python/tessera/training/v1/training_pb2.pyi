import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from tessera.common.v1 import common_pb2 as _common_pb2
from tessera.events.v1 import training_pb2 as _training_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RowFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROW_FORMAT_UNSPECIFIED: _ClassVar[RowFormat]
    ROW_FORMAT_CHAT: _ClassVar[RowFormat]
    ROW_FORMAT_PROMPT_RESPONSE: _ClassVar[RowFormat]
    ROW_FORMAT_TEXT: _ClassVar[RowFormat]
    ROW_FORMAT_EVALUATION: _ClassVar[RowFormat]

class Task(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_UNSPECIFIED: _ClassVar[Task]
    TASK_CHAT: _ClassVar[Task]
    TASK_INSTRUCTION: _ClassVar[Task]
    TASK_CONTINUED_PRETRAINING: _ClassVar[Task]

class Method(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    METHOD_UNSPECIFIED: _ClassVar[Method]
    METHOD_FULL: _ClassVar[Method]
    METHOD_LORA: _ClassVar[Method]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
ROW_FORMAT_UNSPECIFIED: RowFormat
ROW_FORMAT_CHAT: RowFormat
ROW_FORMAT_PROMPT_RESPONSE: RowFormat
ROW_FORMAT_TEXT: RowFormat
ROW_FORMAT_EVALUATION: RowFormat
TASK_UNSPECIFIED: Task
TASK_CHAT: Task
TASK_INSTRUCTION: Task
TASK_CONTINUED_PRETRAINING: Task
METHOD_UNSPECIFIED: Method
METHOD_FULL: Method
METHOD_LORA: Method
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState

class DatasetVersion(_message.Message):
    __slots__ = ("dataset", "version", "format", "row_count", "size_bytes", "columns", "source", "created_by", "created_at")
    class ColumnsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DATASET_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    ROW_COUNT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    version: str
    format: RowFormat
    row_count: int
    size_bytes: int
    columns: _containers.ScalarMap[str, str]
    source: str
    created_by: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, dataset: _Optional[str] = ..., version: _Optional[str] = ..., format: _Optional[_Union[RowFormat, str]] = ..., row_count: _Optional[int] = ..., size_bytes: _Optional[int] = ..., columns: _Optional[_Mapping[str, str]] = ..., source: _Optional[str] = ..., created_by: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Dataset(_message.Message):
    __slots__ = ("full_name", "description", "owner", "created_at", "versions")
    FULL_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    full_name: str
    description: str
    owner: str
    created_at: _timestamp_pb2.Timestamp
    versions: _containers.RepeatedCompositeFieldContainer[DatasetVersion]
    def __init__(self, full_name: _Optional[str] = ..., description: _Optional[str] = ..., owner: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., versions: _Optional[_Iterable[_Union[DatasetVersion, _Mapping]]] = ...) -> None: ...

class CreateDatasetRequest(_message.Message):
    __slots__ = ("full_name", "description")
    FULL_NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    full_name: str
    description: str
    def __init__(self, full_name: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class UploadDatasetVersionRequest(_message.Message):
    __slots__ = ("dataset", "data")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    data: bytes
    def __init__(self, dataset: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class CreateDatasetVersionFromInferenceTableRequest(_message.Message):
    __slots__ = ("dataset", "endpoint", "start_time", "end_time", "status", "format")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    endpoint: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    status: str
    format: RowFormat
    def __init__(self, dataset: _Optional[str] = ..., endpoint: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., status: _Optional[str] = ..., format: _Optional[_Union[RowFormat, str]] = ...) -> None: ...

class DescribeDatasetRequest(_message.Message):
    __slots__ = ("full_name",)
    FULL_NAME_FIELD_NUMBER: _ClassVar[int]
    full_name: str
    def __init__(self, full_name: _Optional[str] = ...) -> None: ...

class ReadDatasetVersionRequest(_message.Message):
    __slots__ = ("dataset", "version")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    version: str
    def __init__(self, dataset: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class DatasetChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class DatasetRef(_message.Message):
    __slots__ = ("dataset", "version")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    version: str
    def __init__(self, dataset: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class LoraConfig(_message.Message):
    __slots__ = ("rank", "alpha", "dropout", "target_modules")
    RANK_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    DROPOUT_FIELD_NUMBER: _ClassVar[int]
    TARGET_MODULES_FIELD_NUMBER: _ClassVar[int]
    rank: int
    alpha: float
    dropout: float
    target_modules: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, rank: _Optional[int] = ..., alpha: _Optional[float] = ..., dropout: _Optional[float] = ..., target_modules: _Optional[_Iterable[str]] = ...) -> None: ...

class JobSpec(_message.Message):
    __slots__ = ("base_model", "base_version", "base_alias", "train_dataset", "eval_dataset", "task", "method", "lora", "epochs", "steps", "tokens", "learning_rate", "lr_schedule", "warmup_steps", "batch_size", "sequence_length", "seed", "register_to", "alias", "experiment", "workers_per_job", "checkpoint_every_steps", "eval_every_steps", "weight_decay", "max_grad_norm")
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    BASE_ALIAS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_DATASET_FIELD_NUMBER: _ClassVar[int]
    EVAL_DATASET_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    LORA_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    LR_SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    WARMUP_STEPS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_LENGTH_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    REGISTER_TO_FIELD_NUMBER: _ClassVar[int]
    ALIAS_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENT_FIELD_NUMBER: _ClassVar[int]
    WORKERS_PER_JOB_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_EVERY_STEPS_FIELD_NUMBER: _ClassVar[int]
    EVAL_EVERY_STEPS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    MAX_GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
    base_model: str
    base_version: int
    base_alias: str
    train_dataset: DatasetRef
    eval_dataset: DatasetRef
    task: Task
    method: Method
    lora: LoraConfig
    epochs: int
    steps: int
    tokens: int
    learning_rate: float
    lr_schedule: str
    warmup_steps: int
    batch_size: int
    sequence_length: int
    seed: int
    register_to: str
    alias: str
    experiment: str
    workers_per_job: int
    checkpoint_every_steps: int
    eval_every_steps: int
    weight_decay: float
    max_grad_norm: float
    def __init__(self, base_model: _Optional[str] = ..., base_version: _Optional[int] = ..., base_alias: _Optional[str] = ..., train_dataset: _Optional[_Union[DatasetRef, _Mapping]] = ..., eval_dataset: _Optional[_Union[DatasetRef, _Mapping]] = ..., task: _Optional[_Union[Task, str]] = ..., method: _Optional[_Union[Method, str]] = ..., lora: _Optional[_Union[LoraConfig, _Mapping]] = ..., epochs: _Optional[int] = ..., steps: _Optional[int] = ..., tokens: _Optional[int] = ..., learning_rate: _Optional[float] = ..., lr_schedule: _Optional[str] = ..., warmup_steps: _Optional[int] = ..., batch_size: _Optional[int] = ..., sequence_length: _Optional[int] = ..., seed: _Optional[int] = ..., register_to: _Optional[str] = ..., alias: _Optional[str] = ..., experiment: _Optional[str] = ..., workers_per_job: _Optional[int] = ..., checkpoint_every_steps: _Optional[int] = ..., eval_every_steps: _Optional[int] = ..., weight_decay: _Optional[float] = ..., max_grad_norm: _Optional[float] = ...) -> None: ...

class Preflight(_message.Message):
    __slots__ = ("problems", "train_rows", "train_tokens", "trained_tokens", "total_steps", "estimated_seconds", "estimated_peak_memory_bytes", "base_parameters", "trainable_parameters")
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_ROWS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TRAINED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_PEAK_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    BASE_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    TRAINABLE_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    problems: _containers.RepeatedScalarFieldContainer[str]
    train_rows: int
    train_tokens: int
    trained_tokens: int
    total_steps: int
    estimated_seconds: float
    estimated_peak_memory_bytes: int
    base_parameters: int
    trainable_parameters: int
    def __init__(self, problems: _Optional[_Iterable[str]] = ..., train_rows: _Optional[int] = ..., train_tokens: _Optional[int] = ..., trained_tokens: _Optional[int] = ..., total_steps: _Optional[int] = ..., estimated_seconds: _Optional[float] = ..., estimated_peak_memory_bytes: _Optional[int] = ..., base_parameters: _Optional[int] = ..., trainable_parameters: _Optional[int] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "spec", "state", "run_id", "error_message", "created_by", "created_at", "updated_at", "step", "total_steps", "checkpoint_step", "attempts", "worker", "model_name", "model_version", "preflight", "base_version")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_STEP_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PREFLIGHT_FIELD_NUMBER: _ClassVar[int]
    BASE_VERSION_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    spec: JobSpec
    state: JobState
    run_id: str
    error_message: str
    created_by: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    step: int
    total_steps: int
    checkpoint_step: int
    attempts: int
    worker: str
    model_name: str
    model_version: int
    preflight: Preflight
    base_version: int
    def __init__(self, job_id: _Optional[str] = ..., spec: _Optional[_Union[JobSpec, _Mapping]] = ..., state: _Optional[_Union[JobState, str]] = ..., run_id: _Optional[str] = ..., error_message: _Optional[str] = ..., created_by: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., step: _Optional[int] = ..., total_steps: _Optional[int] = ..., checkpoint_step: _Optional[int] = ..., attempts: _Optional[int] = ..., worker: _Optional[str] = ..., model_name: _Optional[str] = ..., model_version: _Optional[int] = ..., preflight: _Optional[_Union[Preflight, _Mapping]] = ..., base_version: _Optional[int] = ...) -> None: ...

class SubmitJobRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: JobSpec
    def __init__(self, spec: _Optional[_Union[JobSpec, _Mapping]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("register_to", "page")
    REGISTER_TO_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    register_to: str
    page: _common_pb2.PageRequest
    def __init__(self, register_to: _Optional[str] = ..., page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "page")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    page: _common_pb2.PageResponse
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., page: _Optional[_Union[_common_pb2.PageResponse, _Mapping]] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class StreamJobEventsRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...
