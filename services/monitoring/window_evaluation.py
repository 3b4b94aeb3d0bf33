"""Closed windows -> merged profiles, drift metrics, alarms with hysteresis, drift events.

A window's drift events are written in the transaction that records its alarms:
into `drift_events` (what ListDriftEvents reads) and into the shared outbox
(services/common/outbox.py), whose publisher sends each committed event once.

A window is evaluated once the watermark (the newest event time, or the wall
clock when the stream has been idle) passes its end plus a grace period. A late
record marks its window dirty again: the window is re-profiled and its drift
metrics rewritten; alarms only move forward in time, so re-evaluating an older
window updates its numbers without replaying events out of order.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from tessera.events.v1.drift_pb2 import DriftEvent

from services.common import telemetry
from services.common.outbox import Outbox, OutboxEncoding, OutboxEvent
from services.monitoring import converters, drift, metrics
from services.monitoring.entities import (
    BASELINE,
    DETECTED,
    PREVIOUS_WINDOW,
    RESOLVED,
    DriftEventRecord,
    MonitorSpec,
    Thresholds,
)
from services.monitoring.profiles import Profile, merge_all
from services.monitoring.store import MonitoringStore, ts

_log = logging.getLogger(__name__)
_TRACER = trace.get_tracer("tessera.monitoring")

# Table `outbox` in the monitoring schema (migration 0004). A payload keeps the event id it was
# given with its `drift_events` row, so Kafka and ListDriftEvents name an event alike.
OUTBOX = Outbox("outbox", OutboxEncoding(DriftEvent))


def describe_baseline(spec: MonitorSpec) -> str:
    if spec.has_time_range_baseline:
        return f"inference table {ts(spec.baseline_start).isoformat()} .. {ts(spec.baseline_end).isoformat()}"
    return "reference profiles"


class AlarmBook:
    """Hysteresis: raise when a value crosses its threshold, resolve only well back inside it."""

    def __init__(self, thresholds: Thresholds, state: dict[tuple, tuple[bool, float]]) -> None:
        self.thresholds = thresholds
        self.state = state
        self.changed: dict[tuple, tuple[bool, float]] = {}

    def observe(
        self, key: tuple, statistic: str, value: float, window_start: float, significant: bool = True
    ) -> str | None:
        threshold = self.thresholds.values[statistic]
        active, last = self.state.get(key, (False, float("-inf")))
        if window_start < last:
            return None  # an older window re-evaluated after late records: numbers only
        transition = None
        if not active and significant and drift.crosses(statistic, value, threshold):
            active, transition = True, DETECTED
        elif active and drift.back_to_normal(statistic, value, threshold, self.thresholds.resolve_ratio):
            active, transition = False, RESOLVED
        self.state[key] = self.changed[key] = (active, window_start)
        return transition


def outbox_events(events: list[dict[str, Any]]) -> list[OutboxEvent]:
    """Keyed by endpoint, so one endpoint's events stay in order."""
    return [
        OutboxEvent(e["endpoint"], converters.drift_event(DriftEventRecord.from_json(e)).SerializeToString())
        for e in events
    ]


class WindowEvaluator:
    def __init__(
        self, store: MonitoringStore, drift_topic: str, on_events_committed: Callable[[], None] = lambda: None
    ) -> None:
        self.store = store
        self.drift_topic = drift_topic
        # Wakes the outbox publisher, so an event goes out now rather than at its next poll.
        self.on_events_committed = on_events_committed

    async def evaluate(
        self,
        spec: MonitorSpec,
        start: float,
        end: float,
        version: int,
        baseline: dict[tuple[str, str], Profile] | None,
    ) -> int:
        """Evaluate one window; returns the number of events it raised."""
        events: list[dict[str, Any]] = []
        async with self.store.db.transaction() as conn:
            await self.store.lock_monitor(conn, spec.monitor_id)
            partials, max_seq = await self.store.window_profiles(conn, spec.monitor_id, start)
            if not partials:
                await self.store.mark_evaluated(conn, spec.monitor_id, start, version)
                return 0
            merged = {key: merge_all(parts) for key, parts in partials.items()}
            await self.store.compact_window(conn, spec.monitor_id, start, merged, max_seq)
            previous_parts, _ = await self.store.window_profiles(conn, spec.monitor_id, start - spec.window_seconds)
            previous = {key: merge_all(parts) for key, parts in previous_parts.items()}
            book = AlarmBook(spec.thresholds, await self.store.alarms(conn, spec.monitor_id))
            rows: list[tuple] = []
            for (slice_name, feature), profile in sorted(merged.items()):
                for comparison, reference in (
                    (BASELINE, (baseline or {}).get((slice_name, feature))),
                    (PREVIOUS_WINDOW, previous.get((slice_name, feature))),
                ):
                    if reference is None:
                        continue
                    statistics = drift.compare(reference, profile)
                    significant = drift.significant(statistics, spec.thresholds.significance)
                    for statistic, value in statistics.items():
                        threshold = spec.thresholds.values.get(statistic, 0.0)
                        drifted = threshold > 0 and drift.crosses(statistic, value, threshold)
                        if statistic not in drift.LOWER_IS_DRIFT:
                            drifted = drifted and significant
                        rows.append(
                            (
                                spec.monitor_id,
                                ts(start),
                                ts(end),
                                slice_name,
                                feature,
                                statistic,
                                comparison,
                                value,
                                threshold,
                                drifted,
                                profile.count,
                            )
                        )
                        labels = (
                            spec.monitor_id,
                            spec.endpoint,
                            feature,
                            metrics.SLICE_LABEL(slice_name),
                            statistic,
                            comparison,
                        )
                        metrics.DRIFT_VALUE.labels(*labels).set(value)
                        alarmed = comparison == BASELINE or spec.alert_on_previous_window
                        if threshold <= 0 or not alarmed or profile.count < spec.thresholds.min_window_count:
                            continue
                        key = (slice_name, feature, statistic, comparison)
                        kind = book.observe(key, statistic, value, start, significant)
                        metrics.DRIFT_ACTIVE.labels(*labels).set(1 if book.state[key][0] else 0)
                        if kind:
                            events.append(self._event(spec, kind, key, value, threshold, start, end))
            await self.store.save_drift_metrics(conn, rows)
            await self.store.save_alarms(
                conn, [(spec.monitor_id, *key, active, ts(last)) for key, (active, last) in book.changed.items()]
            )
            if events:
                await self.store.add_events(conn, events)
                with await self._drift_span(spec, start, end, events):
                    await OUTBOX.add(conn, self.drift_topic, outbox_events(events))
            await self.store.mark_evaluated(conn, spec.monitor_id, start, version)
        metrics.WINDOWS_EVALUATED.labels(spec.monitor_id).inc()
        if events:
            for event in events:
                metrics.DRIFT_EVENTS.labels(event["endpoint"], event["kind"]).inc()
            self.on_events_committed()
        return len(events)

    async def _drift_span(
        self, spec: MonitorSpec, start: float, end: float, events: list[dict[str, Any]]
    ) -> contextlib.AbstractContextManager:
        """When spans are exported: the events' span, linked to the traces of the requests the window
        holds, so an alarm leads back to them (its records carry this span's trace)."""
        if not telemetry.exporting():
            return contextlib.nullcontext()
        trace_ids = await self.store.window_trace_ids(spec.endpoint, start, end, telemetry.MAX_LINKS)
        return _TRACER.start_as_current_span(
            "drift event",
            kind=trace.SpanKind.PRODUCER,
            links=telemetry.link_to_traces(trace_ids),
            attributes={
                "tessera.monitor_id": spec.monitor_id,
                "tessera.endpoint": spec.endpoint,
                "tessera.drift.kinds": ",".join(sorted({e["kind"] for e in events})),
                "tessera.drift.features": ",".join(sorted({e["feature"] for e in events})),
                "tessera.window.traces": len(trace_ids),
            },
        )

    @staticmethod
    def _event(
        spec: MonitorSpec, kind: str, key: tuple, value: float, threshold: float, start: float, end: float
    ) -> dict[str, Any]:
        slice_name, feature, statistic, comparison = key
        _log.info(
            "%s: drift %s on %s/%s %s=%.4f (threshold %.4f)",
            spec.monitor_id,
            kind,
            feature,
            slice_name or "*",
            statistic,
            value,
            threshold,
        )
        return {
            "event_id": uuid.uuid4().hex,
            "kind": kind,
            "monitor_id": spec.monitor_id,
            "endpoint": spec.endpoint,
            "feature": feature,
            "slice": slice_name,
            "statistic": statistic,
            "value": value,
            "threshold": threshold,
            "window_start": start,
            "window_end": end,
            "comparison": comparison,
            "baseline": describe_baseline(spec) if comparison == BASELINE else "previous window",
            "detected_at": time.time(),
        }

    async def hand_over_unsent(self) -> int:
        """Events the per-service publisher (before migration 0004) had not sent yet go to the outbox."""
        async with self.store.db.transaction() as conn:
            events = await self.store.take_unpublished_events(conn)
            await OUTBOX.add(conn, self.drift_topic, outbox_events(events))
        if events:
            self.on_events_committed()
        return len(events)
