"""Wire types <-> core types: monitor specs, profiles, drift metrics and events, quality metrics."""

from __future__ import annotations

import math

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp
from tessera.events.v1.drift_pb2 import DriftEvent
from tessera.monitoring.v1 import monitoring_pb2 as pb

from services.common.errors import InvalidArgument
from services.monitoring.entities import (
    BASELINE,
    DETECTED,
    ONLINE,
    DriftEventRecord,
    DriftMetric,
    MonitorRequest,
    MonitorSpec,
    QualityMetric,
    WindowProfile,
)
from services.monitoring.profiles import CATEGORICAL, NUMERIC, CategoricalProfile, NumericProfile, Profile

_KINDS = {pb.NUMERIC: NUMERIC, pb.CATEGORICAL: CATEGORICAL, pb.FEATURE_KIND_AUTO: None}
_KIND_ENUM = {NUMERIC: pb.NUMERIC, CATEGORICAL: pb.CATEGORICAL}


def timestamp(seconds: float | None) -> Timestamp:
    stamp = Timestamp()
    if seconds is not None:
        stamp.FromNanoseconds(int(round(seconds * 1e9)))
    return stamp


def seconds(stamp: Timestamp, present: bool) -> float | None:
    if not present:
        return None
    try:
        return stamp.ToNanoseconds() / 1e9
    except ValueError as exc:  # past year 9999 or before year 1: not a timestamp protobuf accepts
        raise InvalidArgument(f"timestamp out of range: {exc}") from exc


def feature_requests(monitor: pb.Monitor) -> list[tuple[str, str | None]]:
    return [(f.path, _KINDS.get(f.kind)) for f in monitor.features]


def baseline_range(monitor: pb.Monitor) -> tuple[float, float] | None:
    if monitor.baseline.WhichOneof("source") != "time_range":
        return None
    time_range = monitor.baseline.time_range
    if not time_range.HasField("start") or not time_range.HasField("end"):
        raise InvalidArgument("baseline time range needs start and end", field="baseline.time_range")
    return time_range.start.ToNanoseconds() / 1e9, time_range.end.ToNanoseconds() / 1e9


def monitor_request(monitor: pb.Monitor) -> MonitorRequest:
    """A CreateMonitor request as the core takes it (defaults are the core's to fill in)."""
    baseline = monitor.baseline
    reference = baseline.WhichOneof("source") == "reference"
    return MonitorRequest(
        monitor_id=monitor.monitor_id,
        endpoint=monitor.endpoint,
        features=feature_requests(monitor),
        window_seconds=monitor.window_seconds,
        slices=list(monitor.slices),
        baseline_range=baseline_range(monitor),
        reference=reference,
        reference_profiles={(p.slice, p.feature): profile_from_proto(p) for p in baseline.reference.profiles}
        if reference
        else {},
        reference_values={v.feature: (list(v.numbers), list(v.categories)) for v in baseline.reference.values}
        if reference
        else {},
        thresholds=dict(monitor.thresholds.values),
        resolve_ratio=monitor.thresholds.resolve_ratio,
        min_window_count=monitor.thresholds.min_window_count,
        significance=monitor.thresholds.significance,
        alert_on_previous_window=monitor.alert_on_previous_window,
    )


def profile_from_proto(message: pb.FeatureProfile) -> Profile:
    if message.kind == pb.CATEGORICAL or (message.kind == pb.FEATURE_KIND_AUTO and message.categories):
        counts = dict(message.categories)
        return CategoricalProfile(sum(counts.values()), message.nulls, counts)
    if len(message.bucket_keys) != len(message.bucket_counts):
        raise InvalidArgument(f"{message.feature}: bucket_keys and bucket_counts differ in length", field="baseline")
    order = np.argsort(np.asarray(message.bucket_keys, dtype=np.int32))
    keys = np.asarray(message.bucket_keys, dtype=np.int32)[order]
    counts = np.asarray(message.bucket_counts, dtype=np.int64)[order]
    if int(counts.sum()) != message.count:
        raise InvalidArgument(f"{message.feature}: bucket counts do not add up to count", field="baseline")
    return NumericProfile(
        count=message.count,
        nulls=message.nulls,
        mean=message.mean,
        m2=message.m2,
        min=message.min,
        max=message.max,
        keys=keys,
        counts=counts,
    )


def profile_to_proto(row: WindowProfile) -> pb.FeatureProfile:
    profile = row.profile
    message = pb.FeatureProfile(
        feature=row.feature, slice=row.slice, kind=_KIND_ENUM[profile.kind], count=profile.count, nulls=profile.nulls
    )
    if row.window_start is not None:
        message.window_start.CopyFrom(timestamp(row.window_start))
        message.window_end.CopyFrom(timestamp(row.window_end))
    if isinstance(profile, CategoricalProfile):
        message.categories.update(profile.frequencies)
        return message
    if profile.count:
        message.mean, message.std, message.m2 = profile.mean, profile.std, profile.m2
        message.min, message.max = profile.min, profile.max
        message.quantiles.extend(profile.quantiles())
    message.bucket_keys.extend(profile.keys.tolist())
    message.bucket_counts.extend(profile.counts.tolist())
    return message


def monitor_to_proto(spec: MonitorSpec) -> pb.Monitor:
    message = pb.Monitor(
        monitor_id=spec.monitor_id,
        endpoint=spec.endpoint,
        features=[pb.FeatureSpec(path=f.path, kind=_KIND_ENUM[f.kind]) for f in spec.features],
        slices=list(spec.slices),
        window_seconds=spec.window_seconds,
        thresholds=pb.Thresholds(
            values=spec.thresholds.values,
            resolve_ratio=spec.thresholds.resolve_ratio,
            min_window_count=spec.thresholds.min_window_count,
            significance=spec.thresholds.significance,
        ),
        alert_on_previous_window=spec.alert_on_previous_window,
        created_at=timestamp(spec.created_at),
    )
    if spec.has_time_range_baseline:
        message.baseline.time_range.start.CopyFrom(timestamp(spec.baseline_start))
        message.baseline.time_range.end.CopyFrom(timestamp(spec.baseline_end))
    else:
        message.baseline.reference.SetInParent()
    return message


def drift_event(event: DriftEventRecord) -> DriftEvent:
    return DriftEvent(
        event_id=event.event_id,
        kind=DriftEvent.DRIFT_DETECTED if event.kind == DETECTED else DriftEvent.DRIFT_RESOLVED,
        monitor_id=event.monitor_id,
        endpoint=event.endpoint,
        feature=event.feature,
        slice=event.slice,
        statistic=event.statistic,
        value=event.value,
        threshold=event.threshold,
        window_start=timestamp(event.window_start),
        window_end=timestamp(event.window_end),
        comparison=DriftEvent.BASELINE if event.comparison == BASELINE else DriftEvent.PREVIOUS_WINDOW,
        baseline=event.baseline,
        detected_at=timestamp(event.detected_at),
    )


def drift_metric(metric: DriftMetric) -> pb.DriftMetric:
    return pb.DriftMetric(
        window_start=timestamp(metric.window_start),
        window_end=timestamp(metric.window_end),
        slice=metric.slice,
        feature=metric.feature,
        statistic=metric.statistic,
        value=metric.value if math.isfinite(metric.value) else 0.0,
        comparison=DriftEvent.BASELINE if metric.comparison == BASELINE else DriftEvent.PREVIOUS_WINDOW,
        threshold=metric.threshold,
        drifted=metric.drifted,
        count=metric.count,
    )


def quality_metric(row: QualityMetric) -> pb.QualityMetric:
    out = pb.QualityMetric(
        endpoint=row.endpoint,
        metric=row.metric,
        kind=row.kind,
        online_evaluation_id=row.source_id if row.kind == ONLINE else "",
        eval_run_id=row.eval_run_id,
        window_end=timestamp(row.window_end),
        measured=row.measured,
        unmeasured=row.unmeasured,
    )
    if row.window_start is not None:
        out.window_start.CopyFrom(timestamp(row.window_start))
    if row.value is not None:
        out.value = row.value
    if row.coverage is not None:
        out.coverage = row.coverage
    return out
