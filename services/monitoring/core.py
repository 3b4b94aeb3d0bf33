"""The monitoring core: monitors, ingestion, window evaluation and the read side.

Plain Python over the store; the gRPC and Kafka front ends only convert.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from tessera.events.v1.payload_log_pb2 import PayloadLog

from services.common.auth import Principal
from services.common.errors import AlreadyExists, InvalidArgument, NotFound
from services.common.paging import Page, decode_token, page_of, page_size
from services.monitoring.authorization import MANAGE, SELECT, MonitoringAuthorization
from services.monitoring.entities import (
    DEFAULT_MIN_WINDOW_COUNT,
    DEFAULT_RESOLVE_RATIO,
    DEFAULT_SIGNIFICANCE,
    DEFAULT_WINDOW_SECONDS,
    MAX_ENDPOINT,
    DriftEventRecord,
    DriftMetric,
    MonitorRequest,
    MonitorSpec,
    QualityMetric,
    WindowProfile,
    build_monitor,
    resolve_features,
)
from services.monitoring.ingest import InferenceIngestor, LogRecord, profile_all, reference_profiles
from services.monitoring.profiles import Profile, merge_all
from services.monitoring.quality import METRIC_NAME, QualityIngestor
from services.monitoring.quality_store import QualityStore
from services.monitoring.store import MonitorDeleted, MonitoringStore, ts
from services.monitoring.window_evaluation import WindowEvaluator

_log = logging.getLogger(__name__)

MAX_MONITOR_ID = 128
MAX_REFERENCE_VALUES = 2_000_000
MAX_STATUS = 64


class MonitoringCore:
    def __init__(
        self,
        store: MonitoringStore,
        drift_topic: str,
        *,
        on_events_committed: Callable[[], None] = lambda: None,
        window_grace_s: float = 2.0,
        idle_watermark_s: float = 5.0,
        retention_days: int = 0,
        authorization: MonitoringAuthorization | None = None,
        quality_store: QualityStore | None = None,
    ) -> None:
        self.store = store
        self.quality = QualityIngestor(quality_store or QualityStore(store.db))
        self.authorization = authorization or MonitoringAuthorization(None)
        self.window_grace_s = window_grace_s
        self.idle_watermark_s = idle_watermark_s
        self._monitors: dict[str, MonitorSpec] = {}
        self._by_endpoint: dict[str, list[MonitorSpec]] = {}
        self._baselines: dict[str, dict[tuple[str, str], Profile]] = {}
        self._baseline_ready: set[str] = set()
        self.ingestor = InferenceIngestor(
            store, lambda endpoint: self._by_endpoint.get(endpoint, []), retention_days=retention_days
        )
        self.evaluator = WindowEvaluator(store, drift_topic, on_events_committed)
        self._evaluation_lock = asyncio.Lock()

    # -- monitors ------------------------------------------------------------

    async def refresh_monitors(self) -> None:
        """Reload the monitors (another replica may have created or deleted one)."""
        loaded = await self.store.load_monitors()
        self._monitors = {mid: spec for mid, (spec, _ready) in loaded.items()}
        self._baseline_ready = {mid for mid, (_spec, ready) in loaded.items() if ready}
        by_endpoint: dict[str, list[MonitorSpec]] = defaultdict(list)
        for spec in self._monitors.values():
            by_endpoint[spec.endpoint].append(spec)
        self._by_endpoint = dict(by_endpoint)
        self._baselines = {mid: b for mid, b in self._baselines.items() if mid in self._monitors}

    async def create_monitor(self, principal: Principal, request: MonitorRequest) -> MonitorSpec:
        """Validate, fill in defaults, profile a reference baseline; SELECT on the endpoint needed.
        The monitor is registered (owned by its creator) before it exists: no registration, no monitor."""
        # Who may watch the endpoint is settled before any work on the caller's baseline.
        if not request.endpoint or len(request.endpoint) > MAX_ENDPOINT:
            raise InvalidArgument(f"endpoint: 1-{MAX_ENDPOINT} characters", field="endpoint")
        await self.authorization.require_endpoint(principal, request.endpoint, SELECT)
        reference = None
        if request.reference:
            if sum(len(n) + len(c) for n, c in request.reference_values.values()) > MAX_REFERENCE_VALUES:
                raise InvalidArgument(f"at most {MAX_REFERENCE_VALUES} reference values", field="baseline")
            reference = dict(request.reference_profiles)
            reference.update(reference_profiles(resolve_features(request.features), request.reference_values))
            if not reference:
                raise InvalidArgument("the reference baseline has no profiles and no values", field="baseline")
        spec = build_monitor(
            monitor_id=request.monitor_id or self.new_monitor_id(request.endpoint),
            endpoint=request.endpoint,
            features=request.features,
            window_seconds=request.window_seconds or DEFAULT_WINDOW_SECONDS,
            slices=request.slices,
            baseline_range=request.baseline_range,
            reference=reference,
            thresholds=request.thresholds or None,
            resolve_ratio=request.resolve_ratio or DEFAULT_RESOLVE_RATIO,
            min_window_count=request.min_window_count or DEFAULT_MIN_WINDOW_COUNT,
            alert_on_previous_window=request.alert_on_previous_window,
            significance=request.significance or DEFAULT_SIGNIFICANCE,
            created_at=time.time(),
        )
        if spec.monitor_id in self._monitors:
            raise AlreadyExists(f"monitor {spec.monitor_id!r} exists", field="monitor_id")
        await self.authorization.register_monitor(spec.monitor_id, principal)
        created = False
        try:
            created = await self.store.create_monitor(spec)
            if created and reference:
                await self.store.save_baseline(spec.monitor_id, reference)
        except BaseException:
            if created:
                await self.store.delete_monitor(spec.monitor_id)
            await self.authorization.unregister_monitor(spec.monitor_id, principal)
            raise
        if not created:  # another replica wrote this id first
            await self.authorization.unregister_monitor(spec.monitor_id, principal)
            raise AlreadyExists(f"monitor {spec.monitor_id!r} exists", field="monitor_id")
        await self.refresh_monitors()
        return spec

    @staticmethod
    def new_monitor_id(endpoint: str) -> str:
        # Characters a monitor id may not hold (an endpoint may have ':') become '-'.
        return f"{re.sub(r'[^A-Za-z0-9_.-]', '-', endpoint[:80])}-{uuid.uuid4().hex[:8]}"

    def get_monitor(self, monitor_id: str) -> MonitorSpec:
        spec = self._monitors.get(monitor_id)
        if spec is None:
            raise NotFound(f"no monitor {monitor_id!r}", field="monitor_id")
        return spec

    async def fetch_monitor(self, monitor_id: str) -> MonitorSpec:
        if monitor_id not in self._monitors:
            await self.refresh_monitors()
        return self.get_monitor(monitor_id)

    async def read_monitor(self, principal: Principal, monitor_id: str) -> MonitorSpec:
        """The monitor, for a principal holding SELECT on it."""
        if not monitor_id or len(monitor_id) > MAX_MONITOR_ID:
            raise InvalidArgument("monitor_id: 1-128 characters", field="monitor_id")
        await self.authorization.require_monitor(principal, monitor_id, SELECT)
        return await self.fetch_monitor(monitor_id)

    async def list_monitors(self, principal: Principal, endpoint: str) -> list[MonitorSpec]:
        """The monitors (of one endpoint, or all) the principal may read."""
        if len(endpoint) > MAX_ENDPOINT:
            raise InvalidArgument(f"endpoint: at most {MAX_ENDPOINT} characters", field="endpoint")
        await self.refresh_monitors()
        candidates = [s for s in self._monitors.values() if not endpoint or s.endpoint == endpoint]
        visible = await self.authorization.visible_monitors(principal, [s.monitor_id for s in candidates])
        return sorted((s for s in candidates if s.monitor_id in visible), key=lambda s: s.monitor_id)

    async def delete_monitor(self, principal: Principal, monitor_id: str) -> None:
        """Delete and unregister; MANAGE on the monitor needed."""
        if not monitor_id or len(monitor_id) > MAX_MONITOR_ID:
            raise InvalidArgument("monitor_id: 1-128 characters", field="monitor_id")
        await self.authorization.require_monitor(principal, monitor_id, MANAGE)
        if not await self.store.delete_monitor(monitor_id):
            raise NotFound(f"no monitor {monitor_id!r}", field="monitor_id")
        await self.authorization.unregister_monitor(monitor_id, principal)
        await self.refresh_monitors()

    async def apply_retention(self, now: float | None = None) -> list[str]:
        """Drop the inference-table partitions older than the retention period; their names."""
        horizon = self.ingestor.retention_horizon(now)
        if not horizon:
            return []
        dropped = await self.store.drop_partitions_before(int(horizon // 86400))
        if dropped:
            _log.info("retention dropped %s", ", ".join(dropped))
        return dropped

    # -- ingestion and evaluation -----------------------------------------------

    async def ingest(self, records: Sequence[LogRecord]) -> int:
        try:
            return await self.ingestor.ingest(records)
        except MonitorDeleted:
            # The batch rolled back; the consumer retries it with the monitors as they are now.
            await self.refresh_monitors()
            raise

    def watermark(self, now: float | None = None) -> float:
        """Event time up to which windows may close; the wall clock once the stream is idle."""
        now = time.time() if now is None else now
        mark = self.ingestor.max_event_time
        if now - self.ingestor.last_ingest >= self.idle_watermark_s:
            mark = max(mark, now)
        return mark

    async def evaluate_due(self, now: float | None = None) -> int:
        """Evaluate every dirty window the watermark has passed. Returns the events raised (the outbox
        publisher sends them)."""
        async with self._evaluation_lock:
            await self.evaluator.hand_over_unsent()
            raised = 0
            due = await self.store.dirty_windows(self.watermark(now) - self.window_grace_s)
            for monitor_id, start, end, version in due:
                spec = self._monitors.get(monitor_id)
                if spec is None:
                    continue
                baseline = await self._baseline(spec)
                raised += await self.evaluator.evaluate(spec, start, end, version, baseline)
            return raised

    async def _baseline(self, spec: MonitorSpec) -> dict[tuple[str, str], Profile] | None:
        cached = self._baselines.get(spec.monitor_id)
        if cached is not None:
            return cached
        if spec.monitor_id in self._baseline_ready:
            baseline = await self.store.load_baseline(spec.monitor_id)
        elif spec.has_time_range_baseline and self.watermark() - self.window_grace_s >= spec.baseline_end:
            baseline = await self._profile_time_range(spec)
            await self.store.save_baseline(spec.monitor_id, baseline)
            self._baseline_ready.add(spec.monitor_id)
            _log.info("%s: baseline profiled from the inference table", spec.monitor_id)
        else:
            return None  # the baseline range has not been seen yet: compare with the previous window only
        self._baselines[spec.monitor_id] = baseline
        return baseline

    async def _profile_time_range(self, spec: MonitorSpec) -> dict[tuple[str, str], Profile]:
        parts: dict[tuple[str, str], list[Profile]] = defaultdict(list)
        async for rows in self.store.scan_records(spec.endpoint, spec.baseline_start, spec.baseline_end):
            logs = [log for log, _t in rows]
            times = np.fromiter((t for _log, t in rows), np.float64, len(rows))
            for key, profile in profile_all(spec, logs, times).items():
                parts[key].append(profile)
        return {key: merge_all(p) for key, p in parts.items()}

    # -- read side -------------------------------------------------------------

    async def list_records(
        self,
        principal: Principal,
        endpoint: str,
        start: float | None,
        end: float | None,
        status: str,
        size: int,
        token: str,
    ) -> Page[PayloadLog]:
        """An endpoint's logged requests, newest first; SELECT on the endpoint needed."""
        if not endpoint:
            raise InvalidArgument("endpoint is required", field="endpoint")
        if len(endpoint) > MAX_ENDPOINT:
            raise InvalidArgument(f"endpoint: at most {MAX_ENDPOINT} characters", field="endpoint")
        if len(status) > MAX_STATUS:
            raise InvalidArgument(f"status: at most {MAX_STATUS} characters", field="status")
        limit = page_size(size)
        position = decode_token(token)
        await self.authorization.require_endpoint(principal, endpoint, SELECT)
        after = _keyset(position) if position else None
        rows = await self.store.list_records(
            endpoint,
            ts(start) if start is not None else None,
            ts(end) if end is not None else None,
            status,
            after,
            limit + 1,
        )
        page = page_of(rows, limit, lambda row: {"t": row[0].isoformat(), "id": row[1]})
        return Page([row[2] for row in page.items], page.next_token)

    async def profiles(
        self,
        principal: Principal,
        monitor_id: str,
        start: float | None,
        end: float | None,
        feature: str,
        slice_name: str,
        merge: bool,
    ) -> list[WindowProfile]:
        """Profiles per window (or merged over the range), slice and feature; SELECT on the monitor needed."""
        spec = await self.read_monitor(principal, monitor_id)
        rows = await self.store.profiles_in_range(monitor_id, start, end)
        grouped: dict[tuple[float | None, str, str], list[Profile]] = defaultdict(list)
        for row in rows:
            if feature and row.feature != feature:
                continue
            if slice_name != "*" and row.slice != slice_name:
                continue
            grouped[(None if merge else row.window_start, row.slice, row.feature)].append(row.profile)
        return [
            WindowProfile(w, None if w is None else w + spec.window_seconds, s, f, merge_all(p))
            for (w, s, f), p in sorted(grouped.items(), key=lambda kv: (kv[0][0] or 0, kv[0][1:]))
        ]

    async def drift_metrics(
        self,
        principal: Principal,
        monitor_id: str,
        start: float | None,
        end: float | None,
        feature: str,
        statistic: str,
    ) -> list[DriftMetric]:
        await self.read_monitor(principal, monitor_id)
        return await self.store.list_drift_metrics(monitor_id, start, end, feature, statistic)

    async def drift_events(self, principal: Principal, monitor_id: str) -> list[DriftEventRecord]:
        await self.read_monitor(principal, monitor_id)
        return await self.store.list_events(monitor_id)

    # -- quality metrics ---------------------------------------------------------

    async def ingest_quality(self, rows: Sequence[QualityMetric]) -> int:
        """Store evaluation summaries (see quality.py); returns how many rows were new."""
        return await self.quality.ingest(rows)

    async def list_quality_metrics(
        self,
        principal: Principal,
        endpoint: str,
        metric: str,
        start: float | None,
        end: float | None,
        size: int,
        token: str,
    ) -> Page[QualityMetric]:
        """An endpoint's quality metrics, newest window first; SELECT on the endpoint needed."""
        if not endpoint:
            raise InvalidArgument("endpoint is required", field="endpoint")
        if len(endpoint) > MAX_ENDPOINT:
            raise InvalidArgument(f"endpoint: at most {MAX_ENDPOINT} characters", field="endpoint")
        if metric and not METRIC_NAME.match(metric):
            raise InvalidArgument("metric: 1-128 letters, digits, _ . : -", field="metric")
        limit = page_size(size)
        position = decode_token(token)
        await self.authorization.require_endpoint(principal, endpoint, SELECT)
        after = _quality_keyset(position) if position else None
        rows = await self.quality.store.list_metrics(
            endpoint,
            metric,
            ts(start) if start is not None else None,
            ts(end) if end is not None else None,
            after,
            limit + 1,
        )
        return page_of(rows, limit, lambda r: {"t": r.window_end, "s": r.source_id, "m": r.metric})


def _keyset(position: dict[str, Any]) -> tuple[dt.datetime, str]:
    try:
        return dt.datetime.fromisoformat(position["t"]), str(position["id"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidArgument("invalid page token", field="page_token") from exc


def _quality_keyset(position: dict[str, Any]) -> tuple[float, str, str]:
    try:
        return float(position["t"]), str(position["s"]), str(position["m"])
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidArgument("invalid page token", field="page_token") from exc
