"""Payload logs -> the inference table and partial window profiles, in one transaction per batch.

Only the rows the table did not have yet are profiled, and the partial
profiles commit with them, so a redelivered batch changes nothing. All
per-feature work is vectorised over the batch.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from services.common.errors import InvalidArgument
from services.monitoring import metrics
from services.monitoring.features import Feature, extract_categorical, extract_numeric
from services.monitoring.entities import MonitorSpec
from services.monitoring.profiles import CATEGORICAL, CategoricalProfile, NumericProfile, Profile, merge_all
from services.monitoring.store import MonitoringStore, RecordColumns, profile_row, ts

_DAY = 86400


@dataclasses.dataclass(slots=True)
class LogRecord:
    """A payload log as the core sees it: the decoded message, its bytes and its event time."""

    log: Any  # tessera.events.v1.PayloadLog
    raw: bytes
    event_time: float


def validate(record: LogRecord) -> None:
    log = record.log
    if not log.request_id:
        raise InvalidArgument("payload log has no request_id", field="request_id")
    if not log.endpoint:
        raise InvalidArgument("payload log has no endpoint", field="endpoint")
    if not math.isfinite(record.event_time) or record.event_time <= 0:
        raise InvalidArgument("payload log has no valid timestamp", field="timestamp")


def _columns(records: Sequence[LogRecord]) -> RecordColumns:
    logs = [r.log for r in records]
    return RecordColumns(
        request_id=[log.request_id for log in logs],
        event_time=[r.event_time for r in records],
        endpoint=[log.endpoint for log in logs],
        served_model=[log.served_model for log in logs],
        model_version=[log.model_version for log in logs],
        source=[log.source for log in logs],
        status=[log.status or "OK" for log in logs],
        latency_ms=[log.latency_ms for log in logs],
        time_to_first_token_ms=[log.time_to_first_token_ms for log in logs],
        prompt_tokens=[log.prompt_tokens for log in logs],
        completion_tokens=[log.completion_tokens for log in logs],
        trace_id=[log.trace_id for log in logs],
        record=[r.raw for r in records],
    )


def profile_batch(
    spec: MonitorSpec, logs: Sequence[Any], event_times: np.ndarray, known: dict[str, np.ndarray] | None = None
) -> dict[tuple[float, str, str], Profile]:
    """Profiles of a batch per (window start, slice, feature); slice "" is the whole stream.
    `known` holds columns already read from the batch (the inference-table columns)."""
    known = known or {}
    window = spec.window_seconds
    starts = np.floor(event_times / window) * window
    groups: list[tuple[float, str, np.ndarray]] = []
    slice_values = {key: np.array(extract_categorical(key, logs), dtype=object) for key in spec.slices}
    for start in np.unique(starts):
        in_window = starts == start
        groups.append((float(start), "", in_window))
        for key, values in slice_values.items():
            for value in set(values[in_window]) - {None}:
                groups.append((float(start), f"{key}={value}", in_window & (values == value)))
    profiles: dict[tuple[float, str, str], Profile] = {}
    for feature in spec.features:
        if feature.kind == CATEGORICAL:
            column = known.get(feature.path)
            if column is None:
                column = np.array(extract_categorical(feature.path, logs), dtype=object)
            for start, slice_name, mask in groups:
                profiles[(start, slice_name, feature.path)] = CategoricalProfile.of(column[mask].tolist())
        else:
            if feature.path in known:
                values, rows = known[feature.path], None
            else:
                values, rows = extract_numeric(feature.path, logs)
            for start, slice_name, mask in groups:
                selected = values[mask] if rows is None else values[mask[rows]]
                profiles[(start, slice_name, feature.path)] = NumericProfile.of(selected)
    return profiles


def profile_all(spec: MonitorSpec, logs: Sequence[Any], event_times: np.ndarray) -> dict[tuple[str, str], Profile]:
    """One profile per (slice, feature) over every record, whatever its window."""
    merged: dict[tuple[str, str], list[Profile]] = defaultdict(list)
    for (_start, slice_name, feature), profile in profile_batch(spec, logs, event_times).items():
        merged[(slice_name, feature)].append(profile)
    return {key: merge_all(parts) for key, parts in merged.items()}


def reference_profiles(features: Sequence[Feature], values: dict[str, tuple[list[float], list[str]]]) -> dict:
    """Profiles of raw reference values (a training set), for the whole-stream slice."""
    out: dict[tuple[str, str], Profile] = {}
    for feature in features:
        if feature.path not in values:
            continue
        numbers, categories = values[feature.path]
        if feature.kind == CATEGORICAL:
            out[("", feature.path)] = CategoricalProfile.of(list(categories))
        else:
            out[("", feature.path)] = NumericProfile.of(np.asarray(numbers, dtype=np.float64))
    return out


class InferenceIngestor:
    def __init__(self, store: MonitoringStore, monitors_for: Callable[[str], list[MonitorSpec]]) -> None:
        self.store = store
        self._monitors_for = monitors_for
        self.max_event_time = 0.0
        self.last_ingest = 0.0

    async def ingest(self, records: Sequence[LogRecord]) -> int:
        """Write a batch; returns how many rows were new."""
        if not records:
            return 0
        await self.store.ensure_partitions({int(r.event_time // _DAY) for r in records})
        async with self.store.db.transaction() as conn:
            # PostgreSQL inserts while this process profiles the batch on a worker thread:
            # redeliveries are rare, so profile everything and redo it only if some rows were not new.
            columns = _columns(records)
            inserting = asyncio.ensure_future(self.store.insert_records(conn, columns))
            try:
                partials, windows = await asyncio.to_thread(self._profile, records, columns)
            finally:
                new_ids = set(await inserting)
            fresh: list[LogRecord] = []
            for record in records:  # a request id twice in one batch counts once
                if record.log.request_id in new_ids:
                    new_ids.discard(record.log.request_id)
                    fresh.append(record)
            if len(fresh) != len(records):
                columns = _columns(fresh)
                partials, windows = self._profile(fresh, columns)
            if partials:
                await self.store.append_partials(conn, partials)
                await self.store.touch_windows(conn, windows)
        self.max_event_time = max(self.max_event_time, max(r.event_time for r in records))
        self.last_ingest = time.time()
        metrics.DUPLICATES.inc(len(records) - len(fresh))
        metrics.WATERMARK_LAG.set(max(0.0, time.time() - self.max_event_time))
        if fresh:
            self._observe(columns)
        return len(fresh)

    def _profile(self, records: Sequence[LogRecord], columns: RecordColumns) -> tuple[list[tuple], list[tuple]]:
        partials: list[tuple] = []
        windows: list[tuple] = []
        endpoints = np.array(columns.endpoint, dtype=object)
        all_times = np.asarray(columns.event_time, dtype=np.float64)
        # The inference-table columns double as feature columns: each field is read once per batch.
        all_known = {
            "latency_ms": np.asarray(columns.latency_ms, dtype=np.float64),
            "time_to_first_token_ms": np.asarray(columns.time_to_first_token_ms, dtype=np.float64),
            "prompt_tokens": np.asarray(columns.prompt_tokens, dtype=np.float64),
            "completion_tokens": np.asarray(columns.completion_tokens, dtype=np.float64),
            "status": np.array(columns.status, dtype=object),
        }
        for endpoint in set(columns.endpoint):
            monitors = self._monitors_for(endpoint)
            if not monitors:
                continue
            rows = np.flatnonzero(endpoints == endpoint)
            if len(rows) == len(records):
                logs, event_times, known = [r.log for r in records], all_times, all_known
            else:
                logs = [records[i].log for i in rows]
                event_times = all_times[rows]
                known = {name: column[rows] for name, column in all_known.items()}
            for spec in monitors:
                for (start, slice_name, feature), profile in profile_batch(spec, logs, event_times, known).items():
                    partials.append((spec.monitor_id, ts(start), slice_name, feature, *profile_row(profile)))
                starts, counts = np.unique(np.floor(event_times / spec.window_seconds), return_counts=True)
                windows += [
                    (spec.monitor_id, s * spec.window_seconds, (s + 1) * spec.window_seconds, int(n))
                    for s, n in zip(starts.tolist(), counts.tolist(), strict=True)
                ]
        return partials, windows

    @staticmethod
    def _observe(columns: RecordColumns) -> None:
        """Per-endpoint Prometheus metrics from the batch's columns."""
        endpoints = np.array(columns.endpoint, dtype=object)
        latency = np.asarray(columns.latency_ms, dtype=np.float64) / 1000.0
        ttft = np.asarray(columns.time_to_first_token_ms, dtype=np.float64) / 1000.0
        prompt = np.asarray(columns.prompt_tokens, dtype=np.int64)
        completion = np.asarray(columns.completion_tokens, dtype=np.int64)
        statuses = np.array(columns.status, dtype=object)
        for endpoint in set(columns.endpoint):
            mask = endpoints == endpoint
            for status, n in Counter(statuses[mask].tolist()).items():
                metrics.REQUESTS.labels(endpoint, status).inc(n)
                if status != "OK":
                    metrics.ERRORS.labels(endpoint, status).inc(n)
            metrics.LATENCY.observe_many(endpoint, latency[mask])
            first_token = ttft[mask]
            metrics.TIME_TO_FIRST_TOKEN.observe_many(endpoint, first_token[first_token > 0])
            metrics.TOKENS.labels(endpoint, "prompt").inc(int(prompt[mask].sum()))
            metrics.TOKENS.labels(endpoint, "completion").inc(int(completion[mask].sum()))
