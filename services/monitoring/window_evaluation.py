"""Closed windows -> merged profiles, drift metrics, alarms with hysteresis, drift events (outbox).

A window is evaluated once the watermark (the newest event time, or the wall
clock when the stream has been idle) passes its end plus a grace period. A late
record marks its window dirty again: the window is re-profiled and its drift
metrics rewritten; alarms only move forward in time, so re-evaluating an older
window updates its numbers without replaying events out of order.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from services.monitoring import drift, metrics
from services.monitoring.entities import BASELINE, DETECTED, PREVIOUS_WINDOW, RESOLVED, MonitorSpec, Thresholds
from services.monitoring.profiles import Profile, merge_all
from services.monitoring.store import MonitoringStore, ts

_log = logging.getLogger(__name__)

Publisher = Callable[[list[dict[str, Any]]], Awaitable[None]]


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


class WindowEvaluator:
    def __init__(self, store: MonitoringStore, publisher: Publisher) -> None:
        self.store = store
        self.publisher = publisher

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
            await self.store.mark_evaluated(conn, spec.monitor_id, start, version)
        metrics.WINDOWS_EVALUATED.labels(spec.monitor_id).inc()
        return len(events)

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

    async def publish_pending(self) -> int:
        """Send the outbox to Kafka; a crash before `mark_published` re-sends (events carry ids)."""
        sent = 0
        while pending := await self.store.unpublished_events():
            await self.publisher([event for _seq, event in pending])
            await self.store.mark_published([seq for seq, _event in pending])
            for _seq, event in pending:
                metrics.DRIFT_EVENTS.labels(event["endpoint"], event["kind"]).inc()
            sent += len(pending)
        return sent
