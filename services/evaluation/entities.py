"""What the evaluation service keeps: run specs, runs with their summaries, per-row results,
assessments and online evaluations, as plain values (converters.py maps them to protobuf)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from services.evaluation.judges import JUDGE_TEMPLATES

DETERMINISTIC_METRICS = (
    "exact_match",
    "token_f1",
    "rouge_l",
    "bleu",
    "precision_at_k",
    "recall_at_k",
    "mrr",
    "ndcg_at_k",
)
JUDGE_METRICS = tuple(JUDGE_TEMPLATES)
METRICS = DETERMINISTIC_METRICS + JUDGE_METRICS
# Metrics an online evaluation can score without a reference answer.
REFERENCE_FREE_METRICS = ("relevance_to_query", "safety", "groundedness", "chunk_relevance")

QUEUED, RUNNING, SUCCEEDED, PARTIAL, FAILED, CANCELLED = (
    "QUEUED",
    "RUNNING",
    "SUCCEEDED",
    "PARTIAL",
    "FAILED",
    "CANCELLED",
)
FINAL_STATES = (SUCCEEDED, PARTIAL, FAILED, CANCELLED)

LABEL, PREFERENCE = "LABEL", "PREFERENCE"
VERDICTS = ("", "GOOD", "BAD")
PREFERENCES = ("", "A", "B", "TIE", "BOTH_BAD")


@dataclass(frozen=True)
class Sampling:
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "stop": list(self.stop)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Sampling:
        return cls(**{**data, "stop": tuple(data.get("stop", ()))})


@dataclass(frozen=True)
class RunSpec:
    eval_run_id: str = ""
    dataset: str = ""
    dataset_version: str = ""
    target_endpoint: str = ""
    metrics: tuple[str, ...] = ()
    judge_endpoint: str = ""
    repeats: int = 1
    concurrency: int = 8
    seed: int = 0
    sampling: Sampling = field(default_factory=Sampling)
    k: int = 5
    experiment: str = ""
    human_label_column: str = ""
    tags: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "metrics": list(self.metrics), "sampling": self.sampling.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunSpec:
        return cls(
            **{
                **data,
                "metrics": tuple(data.get("metrics", ())),
                "sampling": Sampling.from_json(data.get("sampling", {})),
                "tags": dict(data.get("tags", {})),
            }
        )


@dataclass(frozen=True)
class MetricValue:
    metric: str
    value: float | None
    judge_reply: str = ""
    unmeasured_reason: str = ""
    # Summary records only.
    measured: int = 0
    unmeasured: int = 0


@dataclass(frozen=True)
class RowResult:
    """One row of the dataset in one repeat: the target's answer and every metric's value."""

    eval_run_id: str
    example_id: str
    repeat: int = 0
    metrics: tuple[MetricValue, ...] = ()
    response: str = ""
    retrieved_ids: tuple[str, ...] = ()
    latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    request_id: str = ""
    status: str = "OK"
    error_message: str = ""
    at: datetime | None = None
    target_endpoint: str = ""
    served_model: str = ""
    judge_models: tuple[str, ...] = ()
    # Online evaluation records only.
    online_evaluation_id: str = ""
    window_start: datetime | None = None
    window_end: datetime | None = None

    def value(self, metric: str) -> MetricValue | None:
        return next((m for m in self.metrics if m.metric == metric), None)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["metrics"] = [asdict(m) for m in self.metrics]
        data["retrieved_ids"] = list(self.retrieved_ids)
        data["judge_models"] = list(self.judge_models)
        for key in ("at", "window_start", "window_end"):
            data[key] = getattr(self, key).isoformat() if getattr(self, key) else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RowResult:
        return cls(
            **{
                **data,
                "metrics": tuple(MetricValue(**m) for m in data.get("metrics", ())),
                "retrieved_ids": tuple(data.get("retrieved_ids", ())),
                "judge_models": tuple(data.get("judge_models", ())),
                **{
                    key: datetime.fromisoformat(data[key]) if data.get(key) else None
                    for key in ("at", "window_start", "window_end")
                },
            }
        )


@dataclass(frozen=True)
class IntervalValue:
    estimate: float
    low: float
    high: float
    method: str
    n: int
    confidence: float


@dataclass(frozen=True)
class Summary:
    """One metric of a run: interval over the measured values, coverage, repeats apart."""

    metric: str
    interval: IntervalValue | None
    measured: int
    unmeasured: int
    per_repeat: tuple[IntervalValue | None, ...] = ()
    prompt_hash: str = ""
    prompt_version: str = ""

    @property
    def coverage(self) -> float:
        total = self.measured + self.unmeasured
        return self.measured / total if total else 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Summary:
        interval = IntervalValue(**data["interval"]) if data.get("interval") else None
        per_repeat = tuple(IntervalValue(**i) if i else None for i in data.get("per_repeat", ()))
        return cls(**{**data, "interval": interval, "per_repeat": per_repeat})


@dataclass(frozen=True)
class Calibration:
    metric: str
    prompt_hash: str
    judge_model: str
    n: int
    agreement: float
    cohen_kappa: float  # NaN when undefined
    confusion: tuple[int, int, int, int]  # [FAIL, PASS] rows human, columns judge
    note: str = ""


@dataclass
class Run:
    eval_run_id: str
    spec: RunSpec
    state: str = QUEUED
    created_by: str = ""
    created_at: datetime | None = None
    finished_at: datetime | None = None
    completed: int = 0
    total: int = 0
    failed: int = 0
    summaries: list[Summary] = field(default_factory=list)
    latency: dict[str, float] = field(default_factory=dict)  # p50_ms, p95_ms, mean_ms
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    mlflow_run_id: str = ""
    experiment_id: str = ""
    manifest: dict[str, Any] = field(default_factory=dict)
    calibrations: list[Calibration] = field(default_factory=list)
    error_message: str = ""


@dataclass(frozen=True)
class Assessment:
    assessment_id: str = ""
    kind: str = LABEL
    endpoint: str = ""
    request_id: str = ""
    verdict: str = ""
    expected_response: str = ""
    guideline: str = ""
    comment: str = ""
    prompt: str = ""
    endpoint_a: str = ""
    endpoint_b: str = ""
    request_id_a: str = ""
    request_id_b: str = ""
    sides_swapped: bool = False
    preference: str = ""
    created_by: str = ""
    created_at: datetime | None = None

    def body(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("created_at")
        return data


@dataclass(frozen=True)
class OnlineEvaluation:
    online_evaluation_id: str = ""
    endpoint: str = ""
    metrics: tuple[str, ...] = ()
    judge_endpoint: str = ""
    sample_rate: float = 1.0
    interval_seconds: int = 300
    max_rows_per_window: int = 100
    created_by: str = ""
    created_at: datetime | None = None
    last_window_end: datetime | None = None
    latest: tuple[Summary, ...] = ()
