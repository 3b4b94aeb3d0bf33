"""Payload logs -> the inference table and partial window profiles, in one transaction per batch.

Only the rows the table did not have yet are profiled, and the partial
profiles commit with them, so a redelivered batch changes nothing. A request
id is stored once: the first record with it wins, a later one (another
timestamp too) is a duplicate. Only answered (OK) requests are profiled. All
per-feature work is vectorised over the batch.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from google.protobuf.struct_pb2 import ListValue, Struct

from services.common.errors import InvalidArgument
from services.monitoring import metrics
from services.monitoring.entities import MonitorSpec
from services.monitoring.features import Feature, extract_categorical, extract_numeric
from services.monitoring.profiles import CATEGORICAL, CategoricalProfile, NumericProfile, Profile, merge_all
from services.monitoring.store import MonitoringStore, RecordColumns, profile_row, ts

_DAY = 86400


@dataclasses.dataclass(slots=True)
class LogRecord:
    """A payload log as the core sees it: the decoded message, its bytes and its event time."""

    log: Any  # tessera.events.v1.PayloadLog
    raw: bytes  # the parsed log, serialized as protobuf (whatever content type it arrived in)
    event_time: float
    # JSON text of the JSONB columns, filled by `json_columns`.
    request: str | None = None
    response: str | None = None
    labels: str | None = None
    retrieved_context: str | None = None


# Upper bounds of every client-chosen string of a payload log, in characters. A record past
# one is dead-lettered with the reason, before anything is written: an unbounded request id
# would fail the primary-key index (8 KB row limit) and block its partition.
MAX_LENGTHS = {
    "request_id": 256,
    "endpoint": 256,
    "served_model": 512,
    "model_version": 128,
    "source": 64,
    "status": 64,
    "trace_id": 128,
    "principal": 256,
    "finish_reason": 64,
    "error_message": 4096,
}
MAX_LABELS = 64
MAX_LABEL_KEY = 128
MAX_LABEL_VALUE = 1024
# Inputs and outputs as JSON; Kafka's message size already caps them, this keeps one row sane.
MAX_PAYLOAD_JSON = 4 * 1024 * 1024
EARLIEST_EVENT_TIME = 946684800.0  # 2000-01-01
MAX_CLOCK_SKEW_S = 3600.0
# Where a retrieval-augmented request carries the passages it was given (inputs.<key>).
RETRIEVED_CONTEXT_KEYS = ("retrieved_context", "context", "documents")


def validate(record: LogRecord) -> None:
    """Reject a record with a missing or out-of-bounds field (it goes to the DLQ with the reason)."""
    log = record.log
    if not log.request_id:
        raise InvalidArgument("payload log has no request_id", field="request_id")
    if not log.endpoint:
        raise InvalidArgument("payload log has no endpoint", field="endpoint")
    for name, limit in MAX_LENGTHS.items():
        _check_text(name, getattr(log, name), limit)
    if len(log.labels) > MAX_LABELS:
        raise InvalidArgument(f"payload log has {len(log.labels)} labels (at most {MAX_LABELS})", field="labels")
    for key, value in log.labels.items():
        _check_text("labels key", key, MAX_LABEL_KEY)
        _check_text(f"labels[{key}]", value, MAX_LABEL_VALUE)
    if not math.isfinite(record.event_time) or record.event_time <= 0:
        raise InvalidArgument("payload log has no valid timestamp", field="timestamp")
    # A far-future timestamp would push the watermark ahead and close every open window at once.
    if not EARLIEST_EVENT_TIME <= record.event_time <= time.time() + MAX_CLOCK_SKEW_S:
        raise InvalidArgument(
            f"timestamp {record.event_time:.0f} is before 2000 or more than {MAX_CLOCK_SKEW_S:.0f}s in the future",
            field="timestamp",
        )
    for name in ("latency_ms", "time_to_first_token_ms"):
        value = getattr(log, name)
        if not math.isfinite(value) or value < 0:
            raise InvalidArgument(f"{name} must be a finite number >= 0, got {value}", field=name)
    for name in ("prompt_tokens", "completion_tokens"):
        if getattr(log, name) < 0:
            raise InvalidArgument(f"{name} must be >= 0", field=name)


def _check_text(name: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise InvalidArgument(f"{name} is {len(value)} characters long (at most {limit})", field=name)
    if "\x00" in value:
        raise InvalidArgument(f"{name} contains a NUL character", field=name)


def plain(value: Any) -> Any:
    """A Struct / ListValue / scalar as plain JSON-able Python (faster than json_format)."""
    if isinstance(value, Struct):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, ListValue):
        return [plain(item) for item in value]
    return value


def payload_json(value: Any, field: str) -> str | None:
    """`value` as JSON text for a JSONB column; None for an empty message."""
    if not value:
        return None
    text = json.dumps(plain(value) if isinstance(value, Struct | ListValue) else value, allow_nan=False)
    if len(text) > MAX_PAYLOAD_JSON:
        raise InvalidArgument(f"{field} is {len(text)} bytes as JSON (at most {MAX_PAYLOAD_JSON})", field=field)
    if "\\u0000" in text:  # PostgreSQL's jsonb has no NUL character
        raise InvalidArgument(f"{field} contains a NUL character", field=field)
    return text


def retrieved_context(inputs: Struct) -> Any:
    for key in RETRIEVED_CONTEXT_KEYS:
        if key in inputs:
            return inputs[key]
    return None


def json_columns(record: LogRecord) -> None:
    """Fill the record's JSON views (request, response, labels, retrieved context); raises InvalidArgument."""
    log = record.log
    try:
        record.request = payload_json(log.inputs, "inputs")
        record.response = payload_json(log.outputs, "outputs")
        record.labels = json.dumps(dict(log.labels)) if log.labels else None
        context = retrieved_context(log.inputs)
        record.retrieved_context = None if context is None else payload_json(context, "inputs.retrieved_context")
    except ValueError as exc:  # NaN or infinity inside the payload: not JSON
        raise InvalidArgument(f"payload is not valid JSON: {exc}", field="inputs") from exc


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
        principal=[log.principal for log in logs],
        error_message=[log.error_message for log in logs],
        finish_reason=[log.finish_reason for log in logs],
        request=[r.request for r in records],
        response=[r.response for r in records],
        labels=[r.labels for r in records],
        retrieved_context=[r.retrieved_context for r in records],
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
    def __init__(
        self, store: MonitoringStore, monitors_for: Callable[[str], list[MonitorSpec]], retention_days: int = 0
    ) -> None:
        self.store = store
        self._monitors_for = monitors_for
        self.retention_days = retention_days
        self.max_event_time = 0.0
        self.last_ingest = 0.0

    async def ingest(self, records: Sequence[LogRecord]) -> int:
        """Write a batch; returns how many rows were new."""
        horizon = self.retention_horizon()
        if horizon:
            # Older records belong to partitions retention drops (or dropped): not worth a row.
            kept = [r for r in records if r.event_time >= horizon]
            metrics.EXPIRED.inc(len(records) - len(kept))
            records = kept
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
        if fresh:  # a duplicate's timestamp moves nothing, the watermark included
            self.max_event_time = max(self.max_event_time, max(r.event_time for r in fresh))
        self.last_ingest = time.time()
        metrics.DUPLICATES.inc(len(records) - len(fresh))
        metrics.WATERMARK_LAG.set(max(0.0, time.time() - self.max_event_time))
        if fresh:
            self._observe(columns)
        return len(fresh)

    def retention_horizon(self, now: float | None = None) -> float:
        """Start of the oldest day kept (epoch seconds); 0 when everything is kept."""
        if self.retention_days <= 0:
            return 0.0
        now = time.time() if now is None else now
        return (int(now // _DAY) - self.retention_days) * _DAY

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
        # Only answered requests are profiled: refused or failed calls (anyone can send those)
        # never reach a drift profile.
        answered = all_known["status"] == "OK"
        for endpoint in set(columns.endpoint):
            monitors = self._monitors_for(endpoint)
            if not monitors:
                continue
            rows = np.flatnonzero((endpoints == endpoint) & answered)
            if not len(rows):
                continue
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
            by_status = Counter(statuses[mask].tolist())
            label = metrics.ENDPOINT_LABEL(endpoint, vouched="OK" in by_status)
            for status, n in by_status.items():
                status = metrics.status_label(status)
                metrics.REQUESTS.labels(label, status).inc(n)
                if status != "OK":
                    metrics.ERRORS.labels(label, status).inc(n)
            metrics.LATENCY.observe_many(label, latency[mask])
            first_token = ttft[mask]
            metrics.TIME_TO_FIRST_TOKEN.observe_many(label, first_token[first_token > 0])
            metrics.TOKENS.labels(label, "prompt").inc(int(prompt[mask].sum()))
            metrics.TOKENS.labels(label, "completion").inc(int(completion[mask].sum()))
