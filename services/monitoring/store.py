"""PostgreSQL access for the monitoring schema: inference table, monitors, profiles, drift."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import numpy as np
import psycopg
from google.protobuf import json_format
from psycopg import sql
from tessera.events.v1.payload_log_pb2 import PayloadLog

from services.common.db import Database
from services.common.errors import Unavailable
from services.monitoring.entities import DriftEventRecord, DriftMetric, MonitorSpec, WindowProfile
from services.monitoring.profiles import CATEGORICAL, CategoricalProfile, NumericProfile, Profile

UTC = dt.UTC
RECORD_COLUMNS = (
    "request_id",
    "event_time",
    "endpoint",
    "served_model",
    "model_version",
    "source",
    "status",
    "latency_ms",
    "time_to_first_token_ms",
    "prompt_tokens",
    "completion_tokens",
    "trace_id",
    "record",
    "principal",
    "error_message",
    "finish_reason",
    "request",
    "response",
    "labels",
    "retrieved_context",
)
# The batch travels as one array per column (parsed in C by psycopg), not one row at a time.
# A request id is stored once: the first record with it wins, whatever its timestamp
# (`inference_request_ids` is the unpartitioned key the partitioned table cannot have);
# within a batch, the first occurrence wins too.
_INSERT_RECORDS = (
    "WITH u AS ("
    " SELECT DISTINCT ON (r) * FROM unnest("
    " %b::text[], %b::float8[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[],"
    " %b::float8[], %b::float8[], %b::int8[], %b::int8[], %b::text[], %b::bytea[],"
    " %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[])"
    " WITH ORDINALITY AS u(r, t, e, sm, mv, so, st, l, ft, pt, ct, tr, b, pr, em, fr, rq, rs, lb, rc, n)"
    " ORDER BY r, n),"
    " fresh AS (INSERT INTO inference_request_ids (request_id, event_time)"
    " SELECT r, to_timestamp(t) FROM u ON CONFLICT DO NOTHING RETURNING request_id)"
    f" INSERT INTO inference_records ({', '.join(RECORD_COLUMNS)})"
    " SELECT r, to_timestamp(t), e, sm, mv, so, st, l, ft, pt, ct, tr, b, pr, em, fr,"
    " rq::jsonb, rs::jsonb, lb::jsonb, rc::jsonb FROM u JOIN fresh ON fresh.request_id = u.r"
    " ON CONFLICT DO NOTHING RETURNING request_id"
)


@dataclasses.dataclass
class RecordColumns:
    """A batch of inference-table rows, column by column (JSON columns as JSON text)."""

    request_id: list[str]
    event_time: list[float]
    endpoint: list[str]
    served_model: list[str]
    model_version: list[str]
    source: list[str]
    status: list[str]
    latency_ms: list[float]
    time_to_first_token_ms: list[float]
    prompt_tokens: list[int]
    completion_tokens: list[int]
    trace_id: list[str]
    record: list[bytes]
    principal: list[str]
    error_message: list[str]
    finish_reason: list[str]
    request: list[str | None]
    response: list[str | None]
    labels: list[str | None]
    retrieved_context: list[str | None]

    def as_params(self) -> list[list]:
        return [getattr(self, f.name) for f in dataclasses.fields(self)]


_PROFILE_COLUMNS = "kind, count, nulls, mean, m2, min, max, bucket_keys, bucket_counts, categories, category_counts"
_DAY = 86400


class MonitorDeleted(Unavailable):
    """A monitor was deleted (here or by another replica) while its windows were written: retry."""


def payload_log(stored: bytes) -> PayloadLog:
    """A row's `record` as a PayloadLog: protobuf, or JSON in rows written before migration 0003."""
    stored = bytes(stored)
    if stored[:1] == b"{":  # '{' never starts a serialized PayloadLog
        return json_format.Parse(stored.decode("utf-8"), PayloadLog(), ignore_unknown_fields=True)
    return PayloadLog.FromString(stored)


def ts(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, UTC)


def profile_row(profile: Profile) -> tuple:
    if isinstance(profile, CategoricalProfile):
        categories = list(profile.frequencies)
        counts = [profile.frequencies[c] for c in categories]
        return (CATEGORICAL, profile.count, profile.nulls, 0.0, 0.0, 0.0, 0.0, [], [], categories, counts)
    return (
        profile.kind,
        profile.count,
        profile.nulls,
        profile.mean,
        profile.m2,
        profile.min if profile.count else 0.0,
        profile.max if profile.count else 0.0,
        profile.keys.tolist(),
        profile.counts.tolist(),
        [],
        [],
    )


def profile_of(row: Sequence[Any]) -> Profile:
    kind, count, nulls, mean, m2, lo, hi, keys, counts, categories, category_counts = row
    if kind == CATEGORICAL:
        return CategoricalProfile(count, nulls, dict(zip(categories, category_counts, strict=True)))
    return NumericProfile(
        count=count,
        nulls=nulls,
        mean=mean,
        m2=m2,
        min=lo if count else float("inf"),
        max=hi if count else float("-inf"),
        keys=np.asarray(keys, dtype=np.int32),
        counts=np.asarray(counts, dtype=np.int64),
    )


class MonitoringStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._partitions: set[int] = set()

    # -- inference table ---------------------------------------------------

    async def ensure_partitions(self, days: Iterable[int]) -> None:
        """Daily partitions, created on first use (`days` are epoch days)."""
        missing = sorted(set(days) - self._partitions)
        if not missing:
            return
        async with self.db.connection() as conn:
            for day in missing:
                start, end = ts(day * _DAY), ts((day + 1) * _DAY)
                name = f"inference_records_{start:%Y%m%d}"
                try:
                    await conn.execute(
                        f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF inference_records"
                        f" FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
                    )
                    await conn.commit()
                except (psycopg.errors.DuplicateTable, psycopg.errors.UniqueViolation):
                    await conn.rollback()  # a replica created it at the same moment
                self._partitions.add(day)

    async def drop_partitions_before(self, day: int) -> list[str]:
        """Drop the daily partitions wholly before epoch day `day` and forget their request ids."""
        cutoff = ts(day * _DAY)
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace"
                " WHERE p.relname = 'inference_records' AND n.nspname = current_schema()"
            )
            dropped = []
            for (name,) in await cur.fetchall():
                stamp = name.removeprefix("inference_records_")
                try:
                    start = dt.datetime.strptime(stamp, "%Y%m%d").replace(tzinfo=UTC)
                except ValueError:
                    continue  # not one of ours
                if start + dt.timedelta(days=1) <= cutoff:
                    await conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
                    self._partitions.discard(int(start.timestamp()) // _DAY)
                    dropped.append(name)
            await conn.execute("DELETE FROM inference_request_ids WHERE event_time < %s", (cutoff,))
        return sorted(dropped)

    async def insert_records(self, conn: psycopg.AsyncConnection, columns: RecordColumns) -> list[str]:
        """One INSERT of the whole batch as column arrays; returns the request ids that were new."""
        cur = await conn.execute(_INSERT_RECORDS, columns.as_params())
        return [r[0] for r in await cur.fetchall()]

    async def list_records(
        self,
        endpoint: str,
        start: dt.datetime | None,
        end: dt.datetime | None,
        status: str,
        after: tuple[dt.datetime, str] | None,
        limit: int,
    ) -> list[tuple[dt.datetime, str, PayloadLog]]:
        where, args = ["endpoint = %s"], [endpoint]
        if start is not None:
            where.append("event_time >= %s")
            args.append(start)
        if end is not None:
            where.append("event_time < %s")
            args.append(end)
        if status:
            where.append("status = %s")
            args.append(status)
        if after is not None:
            where.append("(event_time, request_id) < (%s, %s)")
            args += list(after)
        async with self.db.connection() as conn:
            cur = await conn.execute(
                f"SELECT event_time, request_id, record FROM inference_records WHERE {' AND '.join(where)}"
                " ORDER BY event_time DESC, request_id DESC LIMIT %s",
                [*args, limit],
            )
            return [(stamp, request_id, payload_log(record)) for stamp, request_id, record in await cur.fetchall()]

    async def scan_records(
        self, endpoint: str, start: float, end: float, chunk: int = 10_000
    ) -> AsyncIterator[list[tuple[PayloadLog, float]]]:
        """The OK records of a time range with their event times, in chunks (for time-range baselines).
        Refused and failed calls are not profiled."""
        async with self.db.connection() as conn:
            cur = conn.cursor(name="baseline_scan")
            await cur.execute(
                "SELECT record, extract(epoch from event_time) FROM inference_records"
                " WHERE endpoint = %s AND event_time >= %s AND event_time < %s AND status = 'OK'",
                (endpoint, ts(start), ts(end)),
            )
            while rows := await cur.fetchmany(chunk):
                yield [(payload_log(record), float(stamp)) for record, stamp in rows]

    # -- monitors ----------------------------------------------------------

    async def create_monitor(self, spec: MonitorSpec) -> bool:
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                "INSERT INTO monitors (monitor_id, endpoint, spec, created_at) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING RETURNING 1",
                (spec.monitor_id, spec.endpoint, json.dumps(spec.to_json()), ts(spec.created_at)),
            )
            return await cur.fetchone() is not None

    async def load_monitors(self) -> dict[str, tuple[MonitorSpec, bool]]:
        async with self.db.connection() as conn:
            cur = await conn.execute("SELECT spec, baseline_ready FROM monitors")
            return {row[0]["monitor_id"]: (MonitorSpec.from_json(row[0]), row[1]) for row in await cur.fetchall()}

    async def delete_monitor(self, monitor_id: str) -> bool:
        async with self.db.transaction() as conn:
            cur = await conn.execute("DELETE FROM monitors WHERE monitor_id = %s RETURNING 1", (monitor_id,))
            return await cur.fetchone() is not None

    async def save_baseline(self, monitor_id: str, profiles: dict[tuple[str, str], Profile]) -> None:
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM baseline_profiles WHERE monitor_id = %s", (monitor_id,))
            async with conn.cursor() as cur:
                await cur.executemany(
                    f"INSERT INTO baseline_profiles (monitor_id, slice, feature, {_PROFILE_COLUMNS})"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    [(monitor_id, s, f, *profile_row(p)) for (s, f), p in profiles.items()],
                )
            await conn.execute("UPDATE monitors SET baseline_ready = true WHERE monitor_id = %s", (monitor_id,))

    async def load_baseline(self, monitor_id: str) -> dict[tuple[str, str], Profile]:
        async with self.db.connection() as conn:
            cur = await conn.execute(
                f"SELECT slice, feature, {_PROFILE_COLUMNS} FROM baseline_profiles WHERE monitor_id = %s",
                (monitor_id,),
            )
            return {(r[0], r[1]): profile_of(r[2:]) for r in await cur.fetchall()}

    # -- window profiles -----------------------------------------------------

    async def append_partials(self, conn: psycopg.AsyncConnection, rows: list[tuple]) -> None:
        """rows: (monitor_id, window_start, slice, feature, *profile_row)."""
        columns = f"monitor_id, window_start, slice, feature, {_PROFILE_COLUMNS}"
        try:
            async with conn.cursor().copy(f"COPY window_profiles ({columns}) FROM STDIN") as copy:
                for row in rows:
                    await copy.write_row(row)
        except psycopg.errors.ForeignKeyViolation as exc:
            raise MonitorDeleted("a monitor was deleted while its windows were written; retrying") from exc

    async def touch_windows(self, conn: psycopg.AsyncConnection, rows: list[tuple[str, float, float, int]]) -> None:
        try:
            async with conn.cursor() as cur:
                await cur.executemany(
                    "INSERT INTO windows (monitor_id, window_start, window_end, count) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT (monitor_id, window_start) DO UPDATE"
                    " SET count = windows.count + excluded.count, dirty = true, version = windows.version + 1",
                    [(m, ts(s), ts(e), n) for m, s, e, n in rows],
                )
        except psycopg.errors.ForeignKeyViolation as exc:
            raise MonitorDeleted("a monitor was deleted while its windows were written; retrying") from exc

    async def dirty_windows(self, watermark: float) -> list[tuple[str, float, float, int]]:
        """(monitor, start, end, version) of the windows to evaluate, oldest first."""
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "SELECT monitor_id, extract(epoch from window_start)::float8, extract(epoch from window_end)::float8,"
                " version FROM windows WHERE dirty AND window_end <= %s ORDER BY window_start, monitor_id",
                (ts(watermark),),
            )
            return await cur.fetchall()

    async def window_profiles(
        self, conn: psycopg.AsyncConnection, monitor_id: str, window_start: float
    ) -> tuple[dict[tuple[str, str], list[Profile]], int]:
        cur = await conn.execute(
            f"SELECT slice, feature, seq, {_PROFILE_COLUMNS} FROM window_profiles"
            " WHERE monitor_id = %s AND window_start = %s",
            (monitor_id, ts(window_start)),
        )
        grouped: dict[tuple[str, str], list[Profile]] = {}
        max_seq = 0
        for row in await cur.fetchall():
            grouped.setdefault((row[0], row[1]), []).append(profile_of(row[3:]))
            max_seq = max(max_seq, row[2])
        return grouped, max_seq

    async def compact_window(
        self,
        conn: psycopg.AsyncConnection,
        monitor_id: str,
        window_start: float,
        merged: dict[tuple[str, str], Profile],
        max_seq: int,
    ) -> None:
        """Replace the partials read (up to `max_seq`) by their merge; later partials stay."""
        await conn.execute(
            "DELETE FROM window_profiles WHERE monitor_id = %s AND window_start = %s AND seq <= %s",
            (monitor_id, ts(window_start), max_seq),
        )
        await self.append_partials(
            conn, [(monitor_id, ts(window_start), s, f, *profile_row(p)) for (s, f), p in merged.items()]
        )

    async def profiles_in_range(self, monitor_id: str, start: float | None, end: float | None) -> list[WindowProfile]:
        """Every partial profile of the range, oldest first (window_end left to the caller)."""
        where, args = ["monitor_id = %s"], [monitor_id]
        if start is not None:
            where.append("window_start >= %s")
            args.append(ts(start))
        if end is not None:
            where.append("window_start < %s")
            args.append(ts(end))
        async with self.db.connection() as conn:
            cur = await conn.execute(
                f"SELECT extract(epoch from window_start)::float8, slice, feature, {_PROFILE_COLUMNS}"
                f" FROM window_profiles WHERE {' AND '.join(where)} ORDER BY window_start, seq",
                args,
            )
            return [WindowProfile(r[0], None, r[1], r[2], profile_of(r[3:])) for r in await cur.fetchall()]

    # -- drift ---------------------------------------------------------------

    async def save_drift_metrics(self, conn: psycopg.AsyncConnection, rows: list[tuple]) -> None:
        """rows: (monitor, window_start, window_end, slice, feature, statistic, comparison, value, threshold, drifted, count)."""
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO drift_metrics (monitor_id, window_start, window_end, slice, feature, statistic,"
                " comparison, value, threshold, drifted, count) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (monitor_id, window_start, slice, feature, statistic, comparison) DO UPDATE SET"
                " value = excluded.value, threshold = excluded.threshold, drifted = excluded.drifted,"
                " count = excluded.count",
                rows,
            )

    async def alarms(self, conn: psycopg.AsyncConnection, monitor_id: str) -> dict[tuple, tuple[bool, float]]:
        cur = await conn.execute(
            "SELECT slice, feature, statistic, comparison, active, extract(epoch from last_window_start)::float8"
            " FROM drift_alarms WHERE monitor_id = %s FOR UPDATE",
            (monitor_id,),
        )
        return {(r[0], r[1], r[2], r[3]): (r[4], r[5]) for r in await cur.fetchall()}

    async def save_alarms(self, conn: psycopg.AsyncConnection, rows: list[tuple]) -> None:
        """rows: (monitor, slice, feature, statistic, comparison, active, last_window_start)."""
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO drift_alarms VALUES (%s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (monitor_id, slice, feature, statistic, comparison) DO UPDATE SET"
                " active = excluded.active, last_window_start = excluded.last_window_start",
                rows,
            )

    async def add_events(self, conn: psycopg.AsyncConnection, events: list[dict]) -> None:
        """The queryable record; the caller puts the events into the outbox in the same transaction."""
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO drift_events (event_id, monitor_id, event, published) VALUES (%s, %s, %s, true)",
                [(e["event_id"], e["monitor_id"], json.dumps(e)) for e in events],
            )

    async def lock_monitor(self, conn: psycopg.AsyncConnection, monitor_id: str) -> None:
        """Serialize evaluations of one monitor across replicas (until the transaction ends)."""
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('tessera-monitor:' || %s))", (monitor_id,))

    async def mark_evaluated(
        self, conn: psycopg.AsyncConnection, monitor_id: str, window_start: float, version: int
    ) -> None:
        await conn.execute(
            "UPDATE windows SET dirty = false, evaluated_at = now()"
            " WHERE monitor_id = %s AND window_start = %s AND version = %s",
            (monitor_id, ts(window_start), version),
        )

    async def take_unpublished_events(self, conn: psycopg.AsyncConnection, limit: int = 500) -> list[dict]:
        """Rows of the publisher before the shared outbox (migration 0004) never sent: marked sent and
        returned, for the caller to put into the outbox in this transaction; other replicas skip them."""
        cur = await conn.execute(
            "UPDATE drift_events SET published = true WHERE seq IN"
            " (SELECT seq FROM drift_events WHERE NOT published ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED)"
            " RETURNING seq, event",
            (limit,),
        )
        return [event for _seq, event in sorted(await cur.fetchall())]

    async def window_trace_ids(self, endpoint: str, start: float, end: float, limit: int) -> list[str]:
        """Trace ids of the requests a window holds (a drift event links them), at most `limit`."""
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "SELECT DISTINCT trace_id FROM inference_records WHERE endpoint = %s AND event_time >= %s"
                " AND event_time < %s AND trace_id <> '' LIMIT %s",
                (endpoint, ts(start), ts(end), limit),
            )
            return [row[0] for row in await cur.fetchall()]

    async def list_events(self, monitor_id: str) -> list[DriftEventRecord]:
        async with self.db.connection() as conn:
            cur = await conn.execute("SELECT event FROM drift_events WHERE monitor_id = %s ORDER BY seq", (monitor_id,))
            return [DriftEventRecord.from_json(r[0]) for r in await cur.fetchall()]

    async def list_drift_metrics(
        self, monitor_id: str, start: float | None, end: float | None, feature: str, statistic: str
    ) -> list[DriftMetric]:
        where, args = ["monitor_id = %s"], [monitor_id]
        for clause, value in (
            ("window_start >= %s", ts(start) if start is not None else None),
            ("window_start < %s", ts(end) if end is not None else None),
            ("feature = %s", feature or None),
            ("statistic = %s", statistic or None),
        ):
            if value is not None:
                where.append(clause)
                args.append(value)
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "SELECT extract(epoch from window_start)::float8, extract(epoch from window_end)::float8, slice,"
                " feature, statistic, comparison, value, threshold, drifted, count FROM drift_metrics"
                f" WHERE {' AND '.join(where)} ORDER BY window_start, feature, slice, statistic, comparison",
                args,
            )
            return [DriftMetric(*row) for row in await cur.fetchall()]
