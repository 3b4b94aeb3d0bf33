"""The hot path: a run's metrics, params and tags written in one transaction.

A batch's points go in with binary COPY as one row per key (parallel arrays of
steps, values and timestamps; see migrations/0002); the per-key latest value is
kept by one upsert row per key (the batch's own maximum, compared in SQL), so
a write never reads history. History reads unnest the chunks through the
(run, key, first_step) index.
"""

from __future__ import annotations

import struct

from psycopg import AsyncConnection

from services.common.errors import InvalidArgument
from services.registry.entities import Metric, MetricColumns
from services.registry.store import copy_binary


def _chunks(batch: MetricColumns) -> list[tuple[str, list[int], list[float], list[int]]]:
    """(key, steps, values, timestamps) per key, each in (step, timestamp) order."""
    keys = set(batch.keys)
    if len(keys) == 1:
        # The usual batch: one key, steps already in order; sort only if they are not.
        points = (batch.steps, batch.values, batch.timestamps)
        pairs = list(zip(batch.steps, batch.timestamps, strict=True))
        if any(a > b for a, b in zip(pairs, pairs[1:], strict=False)):
            order = sorted(range(len(batch)), key=lambda i: (batch.steps[i], batch.timestamps[i]))
            points = tuple([column[i] for i in order] for column in points)
        return [(batch.keys[0], *points)]
    by_key: dict[str, list[tuple[int, int, float]]] = {}
    for key, value, step, ts in zip(batch.keys, batch.values, batch.steps, batch.timestamps, strict=True):
        by_key.setdefault(key, []).append((step, ts, value))
    out = []
    for key, points in by_key.items():
        points.sort(key=lambda p: (p[0], p[1]))
        out.append((key, [p[0] for p in points], [p[2] for p in points], [p[1] for p in points]))
    return out


async def write_metrics(conn: AsyncConnection, run_pk: int, batch: MetricColumns) -> None:
    if not batch:
        return
    chunks = _chunks(batch)
    try:
        data = copy_binary.copy_data([copy_binary.chunk_row(run_pk, *chunk) for chunk in chunks])
    except (OverflowError, struct.error):
        raise InvalidArgument("metric step or timestamp outside the 64-bit integer range", field="metrics") from None
    async with conn.cursor() as cur:
        async with cur.copy(
            "COPY metric_chunks (run_pk, key, first_step, last_step, steps, vals, timestamps) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            await copy.write(data)
        # The last point of each chunk is the batch's latest for that key; SQL keeps it only if newer.
        await cur.execute(
            "INSERT INTO latest_metrics AS l (run_pk, key, value, step, timestamp)"
            " SELECT %s, k, v, s, t FROM unnest(%s::text[], %s::float8[], %s::int8[], %s::int8[]) AS u(k, v, s, t)"
            " ON CONFLICT (run_pk, key) DO UPDATE SET value = EXCLUDED.value, step = EXCLUDED.step,"
            " timestamp = EXCLUDED.timestamp WHERE (EXCLUDED.step, EXCLUDED.timestamp) >= (l.step, l.timestamp)",
            (
                run_pk,
                [c[0] for c in chunks],
                [c[2][-1] for c in chunks],
                [c[1][-1] for c in chunks],
                [c[3][-1] for c in chunks],
            ),
        )


async def write_params(conn: AsyncConnection, run_pk: int, params: dict[str, str]) -> None:
    """Params are write-once: the same value again is fine, a different one is refused (and rolls back)."""
    if not params:
        return
    keys, values = list(params), list(params.values())
    cur = await conn.execute(
        "INSERT INTO params (run_pk, key, value) SELECT %s, k, v FROM unnest(%s::text[], %s::text[]) AS u(k, v)"
        " ON CONFLICT (run_pk, key) DO NOTHING RETURNING key",
        (run_pk, keys, values),
    )
    inserted = {row[0] for row in await cur.fetchall()}
    existing = [k for k in keys if k not in inserted]
    if not existing:
        return
    cur = await conn.execute("SELECT key, value FROM params WHERE run_pk = %s AND key = ANY(%s)", (run_pk, existing))
    for key, old in await cur.fetchall():
        if old != params[key]:
            raise InvalidArgument(
                f"param {key!r} was already logged with value {old!r}; params are write-once (new value {params[key]!r})",
                field="params",
            )


async def write_tags(conn: AsyncConnection, run_pk: int, tags: dict[str, str]) -> None:
    if tags:
        await conn.execute(
            "INSERT INTO run_tags (run_pk, key, value) SELECT %s, k, v FROM unnest(%s::text[], %s::text[]) AS u(k, v)"
            " ON CONFLICT (run_pk, key) DO UPDATE SET value = EXCLUDED.value",
            (run_pk, list(tags), list(tags.values())),
        )


async def metric_history(conn: AsyncConnection, run_pk: int, key: str, offset: int, limit: int) -> list[Metric]:
    cur = await conn.execute(
        "SELECT c.key, u.v, u.s, u.t FROM metric_chunks c, unnest(c.steps, c.vals, c.timestamps) AS u(s, v, t)"
        " WHERE c.run_pk = %s AND c.key = %s ORDER BY u.s, u.t LIMIT %s OFFSET %s",
        (run_pk, key, limit, offset),
    )
    return [Metric(*row) for row in await cur.fetchall()]


async def metric_history_downsampled(conn: AsyncConnection, run_pk: int, key: str, max_points: int) -> list[Metric]:
    """At most max_points points spread evenly by rank, always keeping the first and the last."""
    cur = await conn.execute(
        "WITH points AS (SELECT c.key, u.v AS value, u.s AS step, u.t AS timestamp"
        "  FROM metric_chunks c, unnest(c.steps, c.vals, c.timestamps) AS u(s, v, t)"
        "  WHERE c.run_pk = %(pk)s AND c.key = %(key)s),"
        " ranked AS (SELECT key, value, step, timestamp,"
        "  row_number() OVER (ORDER BY step, timestamp) - 1 AS i, count(*) OVER () AS n FROM points)"
        " SELECT key, value, step, timestamp FROM ranked"
        " WHERE n <= %(m)s OR i = n - 1"
        "   OR (%(m)s > 1 AND floor(i * (%(m)s - 1)::float8 / (n - 1)) <> floor((i - 1) * (%(m)s - 1)::float8 / (n - 1)))"
        "   OR i = 0"
        " ORDER BY step, timestamp",
        {"pk": run_pk, "key": key, "m": max_points},
    )
    return [Metric(*row) for row in await cur.fetchall()]
