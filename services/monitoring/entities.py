"""Plain types of the monitoring core: monitors, their baselines and thresholds, drift events."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from services.common.errors import InvalidArgument
from services.monitoring import drift
from services.monitoring.features import (
    DEFAULT_LLM_FEATURES,
    UNPROFILED_FIELDS,
    Feature,
    resolve_kind,
    validate_path,
)
from services.monitoring.profiles import CATEGORICAL, NUMERIC, Profile

BASELINE = "baseline"
PREVIOUS_WINDOW = "previous_window"

DETECTED = "detected"
RESOLVED = "resolved"

DEFAULT_RESOLVE_RATIO = 0.8
DEFAULT_MIN_WINDOW_COUNT = 200
DEFAULT_SIGNIFICANCE = 0.001
DEFAULT_WINDOW_SECONDS = 3600
MAX_ENDPOINT = 256
MAX_FEATURES = 64
MAX_SLICES = 16
MAX_REFERENCE_PROFILES = 4096
_MONITOR_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


@dataclasses.dataclass(frozen=True)
class Thresholds:
    values: dict[str, float] = dataclasses.field(default_factory=lambda: dict(drift.DEFAULT_THRESHOLDS))
    resolve_ratio: float = DEFAULT_RESOLVE_RATIO
    min_window_count: int = DEFAULT_MIN_WINDOW_COUNT
    significance: float = DEFAULT_SIGNIFICANCE


@dataclasses.dataclass(frozen=True)
class MonitorRequest:
    """A monitor as a caller described it (zero values: defaults), before validation."""

    monitor_id: str
    endpoint: str
    features: list[tuple[str, str | None]]
    window_seconds: int
    slices: list[str]
    baseline_range: tuple[float, float] | None
    # A reference baseline: ready profiles per (slice, feature) and raw values per feature.
    reference: bool = False
    reference_profiles: dict[tuple[str, str], Profile] = dataclasses.field(default_factory=dict)
    reference_values: dict[str, tuple[list[float], list[str]]] = dataclasses.field(default_factory=dict)
    thresholds: dict[str, float] = dataclasses.field(default_factory=dict)
    resolve_ratio: float = 0.0
    min_window_count: int = 0
    significance: float = 0.0
    alert_on_previous_window: bool = False


@dataclasses.dataclass(frozen=True)
class MonitorSpec:
    monitor_id: str
    endpoint: str
    features: tuple[Feature, ...]
    window_seconds: int
    thresholds: Thresholds
    slices: tuple[str, ...] = ()
    # A time range of the inference table, in epoch seconds; None with a reference baseline.
    baseline_start: float | None = None
    baseline_end: float | None = None
    alert_on_previous_window: bool = False
    created_at: float = 0.0

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["features"] = [{"path": f.path, "kind": f.kind} for f in self.features]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MonitorSpec:
        data = dict(data)
        data["features"] = tuple(Feature(f["path"], f["kind"]) for f in data["features"])
        data["slices"] = tuple(data["slices"])
        data["thresholds"] = Thresholds(**data["thresholds"])
        return cls(**data)

    @property
    def has_time_range_baseline(self) -> bool:
        return self.baseline_start is not None


@dataclasses.dataclass(frozen=True)
class WindowProfile:
    """A feature's profile over one window of one slice; no window when merged over a range."""

    window_start: float | None
    window_end: float | None
    slice: str
    feature: str
    profile: Profile


@dataclasses.dataclass(frozen=True)
class DriftMetric:
    """One statistic of one feature and slice in one window, against the baseline or the previous window."""

    window_start: float
    window_end: float
    slice: str
    feature: str
    statistic: str
    comparison: str  # BASELINE or PREVIOUS_WINDOW
    value: float
    threshold: float
    drifted: bool
    count: int


@dataclasses.dataclass(frozen=True)
class DriftEventRecord:
    """An alarm raised or resolved; stored in the drift-event outbox as JSON, published as a DriftEvent."""

    event_id: str
    kind: str  # DETECTED or RESOLVED
    monitor_id: str
    endpoint: str
    feature: str
    slice: str
    statistic: str
    value: float
    threshold: float
    window_start: float
    window_end: float
    comparison: str
    baseline: str
    detected_at: float

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DriftEventRecord:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


def build_monitor(
    *,
    monitor_id: str,
    endpoint: str,
    features: list[tuple[str, str | None]],
    window_seconds: int,
    slices: list[str],
    baseline_range: tuple[float, float] | None,
    reference: dict[tuple[str, str], Profile] | None,
    thresholds: dict[str, float] | None,
    resolve_ratio: float,
    min_window_count: int,
    alert_on_previous_window: bool,
    significance: float = DEFAULT_SIGNIFICANCE,
    created_at: float,
) -> MonitorSpec:
    """Validate a monitor as a caller described it and fill in the defaults."""
    if not _MONITOR_ID.match(monitor_id):
        raise InvalidArgument("monitor_id: 1-128 letters, digits, '_', '.', '-'", field="monitor_id")
    if not endpoint:
        raise InvalidArgument("a monitor watches one endpoint; endpoint is empty", field="endpoint")
    if len(endpoint) > MAX_ENDPOINT:
        raise InvalidArgument(f"endpoint: at most {MAX_ENDPOINT} characters", field="endpoint")
    if len(features) > MAX_FEATURES:
        raise InvalidArgument(f"at most {MAX_FEATURES} features", field="features")
    if len(slices) > MAX_SLICES:
        raise InvalidArgument(f"at most {MAX_SLICES} slices", field="slices")
    if reference and len(reference) > MAX_REFERENCE_PROFILES:
        raise InvalidArgument(f"at most {MAX_REFERENCE_PROFILES} reference profiles", field="baseline")
    if window_seconds < 1:
        raise InvalidArgument("window_seconds must be >= 1 (e.g. 60, 300, 3600, 86400)", field="window_seconds")
    resolved = resolve_features(features)
    for feature in resolved:
        if feature.path in UNPROFILED_FIELDS:
            raise InvalidArgument(
                f"{feature.path!r} cannot be watched: only OK requests are profiled"
                " (error rates are in tessera_monitoring_errors_total)",
                field="features",
            )
    if len({f.path for f in resolved}) != len(resolved):
        raise InvalidArgument("a feature is listed twice", field="features")
    for key in slices:
        validate_path(key)
    if baseline_range is None and not reference:
        raise InvalidArgument("a baseline is required: a time range or reference profiles", field="baseline")
    if baseline_range is not None and not baseline_range[0] < baseline_range[1]:
        raise InvalidArgument("baseline time range: start must be before end", field="baseline.time_range")
    if reference:
        kinds = {f.path: f.kind for f in resolved}
        for (_slice, feature), profile in reference.items():
            if feature not in kinds:
                raise InvalidArgument(f"reference profile for unwatched feature {feature!r}", field="baseline")
            if profile.kind != kinds[feature]:
                raise InvalidArgument(f"reference profile of {feature!r} is not {kinds[feature]}", field="baseline")
    values = dict(drift.DEFAULT_THRESHOLDS) if not thresholds else dict(thresholds)
    for statistic, threshold in values.items():
        if statistic not in drift.ALL_STATISTICS:
            raise InvalidArgument(
                f"unknown statistic {statistic!r}; one of {sorted(drift.ALL_STATISTICS)}", field="thresholds"
            )
        if threshold < 0:
            raise InvalidArgument(f"threshold of {statistic} is negative", field="thresholds")
    if not 0 < significance <= 1:
        raise InvalidArgument("significance must be in (0, 1]", field="thresholds.significance")
    if not 0 < resolve_ratio <= 1:
        raise InvalidArgument("resolve_ratio must be in (0, 1]", field="thresholds.resolve_ratio")
    return MonitorSpec(
        monitor_id=monitor_id,
        endpoint=endpoint,
        features=tuple(resolved),
        window_seconds=window_seconds,
        thresholds=Thresholds(
            {k: v for k, v in values.items() if v > 0}, resolve_ratio, min_window_count, significance
        ),
        slices=tuple(slices),
        baseline_start=baseline_range[0] if baseline_range else None,
        baseline_end=baseline_range[1] if baseline_range else None,
        alert_on_previous_window=alert_on_previous_window,
        created_at=created_at,
    )


def resolve_features(features: list[tuple[str, str | None]]) -> tuple[Feature, ...]:
    """The watched features with their kinds; the LLM defaults when none are named."""
    requested = features or [(path, None) for path in DEFAULT_LLM_FEATURES]
    return tuple(Feature(path, resolve_kind(path, kind)) for path, kind in requested)


def statistics_for(kind: str) -> tuple[str, ...]:
    return drift.CATEGORICAL_STATISTICS if kind == CATEGORICAL else drift.NUMERIC_STATISTICS


__all__ = [
    "NUMERIC",
    "CATEGORICAL",
    "DriftEventRecord",
    "DriftMetric",
    "MonitorRequest",
    "MonitorSpec",
    "WindowProfile",
    "Thresholds",
    "build_monitor",
    "statistics_for",
]


ONLINE = "online"
RUN = "run"


@dataclasses.dataclass(frozen=True)
class QualityMetric:
    """One metric of one evaluated window (online evaluation) or one eval run's summary."""

    endpoint: str
    metric: str
    kind: str  # ONLINE or RUN
    source_id: str  # the online evaluation's id, or the eval run's
    eval_run_id: str
    window_start: float | None
    window_end: float
    value: float | None  # the mean of the measured values; None when none was measured
    measured: int
    unmeasured: int

    @property
    def coverage(self) -> float | None:
        """Share of the values that were measured (a judge that answered parseably); None for none at all."""
        total = self.measured + self.unmeasured
        return self.measured / total if total else None
