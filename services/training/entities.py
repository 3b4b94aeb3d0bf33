"""Plain types of the training service: datasets, job specs, jobs and pre-flight reports."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"
FINAL_STATES = frozenset({SUCCEEDED, FAILED, CANCELLED})
TASKS = ("CHAT", "INSTRUCTION", "CONTINUED_PRETRAINING")
METHODS = ("FULL", "LORA")
SCHEDULES = ("constant", "linear", "cosine")
# The dataset format each task trains on.
TASK_FORMAT = {"CHAT": "CHAT", "INSTRUCTION": "PROMPT_RESPONSE", "CONTINUED_PRETRAINING": "TEXT"}


@dataclass(frozen=True)
class DatasetVersion:
    dataset: str
    version: str
    format: str
    row_count: int
    size_bytes: int
    columns: dict[str, str]
    source: str
    created_by: str
    created_at: datetime | None = None


@dataclass(frozen=True)
class Dataset:
    full_name: str
    description: str
    owner: str
    created_at: datetime | None = None
    versions: tuple[DatasetVersion, ...] = ()


@dataclass(frozen=True)
class JobSpec:
    base_model: str
    base_version: int = 0
    base_alias: str = ""
    train_dataset: str = ""
    train_version: str = ""
    eval_dataset: str = ""
    eval_version: str = ""
    task: str = "CHAT"
    method: str = "LORA"
    lora_rank: int = 16
    lora_alpha: float = 32.0
    lora_dropout: float = 0.0
    lora_target_modules: tuple[str, ...] = ()
    epochs: int = 0
    steps: int = 0
    tokens: int = 0
    learning_rate: float = 1e-4
    lr_schedule: str = "linear"
    warmup_steps: int = 0
    batch_size: int = 8
    sequence_length: int = 512
    seed: int = 0
    register_to: str = ""
    alias: str = ""
    experiment: str = ""
    workers_per_job: int = 1
    checkpoint_every_steps: int = 0
    eval_every_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        out["lora_target_modules"] = list(self.lora_target_modules)
        return out

    @staticmethod
    def from_json(data: dict) -> JobSpec:
        known = {f.name for f in dataclasses.fields(JobSpec)}
        values = {k: v for k, v in data.items() if k in known}
        values["lora_target_modules"] = tuple(values.get("lora_target_modules") or ())
        return JobSpec(**values)


@dataclass(frozen=True)
class Preflight:
    problems: tuple[str, ...] = ()
    train_rows: int = 0
    train_tokens: int = 0
    trained_tokens: int = 0
    total_steps: int = 0
    estimated_seconds: float = 0.0
    estimated_peak_memory_bytes: int = 0
    base_parameters: int = 0
    trainable_parameters: int = 0

    def to_json(self) -> dict:
        out = dataclasses.asdict(self)
        out["problems"] = list(self.problems)
        return out

    @staticmethod
    def from_json(data: dict | None) -> Preflight:
        data = dict(data or {})
        data["problems"] = tuple(data.get("problems") or ())
        return Preflight(**data)


@dataclass(frozen=True)
class Job:
    job_id: str
    spec: JobSpec
    state: str
    created_by: str
    base_version: int = 0
    run_id: str = ""
    error_message: str = ""
    step: int = 0
    total_steps: int = 0
    checkpoint_step: int = 0
    checkpoint_path: str = ""
    attempts: int = 0
    worker: str = ""
    model_name: str = ""
    model_version: int = 0
    cancel_requested: bool = False
    preflight: Preflight = field(default_factory=Preflight)
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class JobEvent:
    seq: int
    job_id: str
    type: str
    step: int = 0
    total_steps: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    checkpoint_uri: str = ""
    model_name: str = ""
    model_version: int = 0
    error_message: str = ""
    worker: str = ""
    run_id: str = ""
    at: datetime | None = None
