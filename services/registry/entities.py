"""The registry's plain data types, shared by the core and its front ends."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

RUN_STATUSES = ("RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED")
VERSION_STATUSES = ("PENDING_REGISTRATION", "READY", "FAILED_REGISTRATION")
ACTIVE, DELETED = "active", "deleted"


@dataclass
class Catalog:
    name: str
    comment: str
    owner: str
    created_at: datetime
    updated_at: datetime


@dataclass
class Schema:
    catalog_name: str
    name: str
    comment: str
    owner: str
    created_at: datetime
    updated_at: datetime

    @property
    def full_name(self) -> str:
        return f"{self.catalog_name}.{self.name}"


@dataclass
class TopLevelSecurable:
    """An endpoint or a monitor: owned by another service's object, guarded here."""

    securable_type: str
    name: str
    owner: str
    created_at: datetime
    updated_at: datetime


@dataclass
class Experiment:
    experiment_id: str
    name: str
    artifact_location: str
    lifecycle_stage: str
    owner: str
    creation_time: int
    last_update_time: int
    catalog_name: str
    schema_name: str
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def schema_full_name(self) -> str:
        return f"{self.catalog_name}.{self.schema_name}"


@dataclass
class Metric:
    key: str
    value: float
    step: int
    timestamp: int


@dataclass
class MetricColumns:
    """A batch of metric points as parallel columns: what the hot path passes to PostgreSQL as arrays."""

    keys: list[str] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.keys)

    @staticmethod
    def of(metrics: list[Metric]) -> MetricColumns:
        return MetricColumns(
            [m.key for m in metrics],
            [m.value for m in metrics],
            [m.step for m in metrics],
            [m.timestamp for m in metrics],
        )


@dataclass
class RunInfo:
    run_id: str
    run_name: str
    experiment_id: str
    user_id: str
    status: str
    start_time: int
    end_time: int | None
    artifact_uri: str
    lifecycle_stage: str


@dataclass
class Run:
    info: RunInfo
    metrics: list[Metric] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class RegisteredModel:
    catalog_name: str
    schema_name: str
    name: str
    description: str
    owner: str
    tags: dict[str, str]
    aliases: dict[str, int]
    latest_version: int
    created_at: datetime
    updated_at: datetime

    @property
    def full_name(self) -> str:
        return f"{self.catalog_name}.{self.schema_name}.{self.name}"


@dataclass
class ModelVersion:
    model_name: str
    version: int
    source: str
    run_id: str
    model_id: str
    status: str
    status_message: str
    description: str
    created_by: str
    storage_location: str
    tags: dict[str, str]
    aliases: list[str]
    created_at: datetime
    updated_at: datetime


@dataclass
class AliasMove:
    alias: str
    action: str
    version: int
    previous_version: int
    actor: str
    at: datetime


@dataclass
class LoggedModel:
    model_id: str
    experiment_id: str
    name: str
    artifact_location: str
    source_run_id: str
    model_type: str
    status: str
    lifecycle_stage: str
    creation_time: int
    last_updated_time: int
    tags: dict[str, str]
    params: dict[str, str]
    metrics: list[dict]


@dataclass(frozen=True)
class LineageNode:
    type: str
    name: str


@dataclass
class LineageEdge:
    source: LineageNode
    target: LineageNode
    properties: dict[str, str]
    created_by: str
    created_at: datetime


@dataclass
class FileInfo:
    path: str
    is_dir: bool
    size: int


@dataclass
class Page:
    """A page of results and the token for the next one ('' when done)."""

    items: list
    next_token: str = ""
