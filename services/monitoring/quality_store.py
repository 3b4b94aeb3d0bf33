"""PostgreSQL access for quality metrics (migration 0006): the quality_metrics table."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from services.common.db import Database
from services.monitoring.entities import QualityMetric

_COLUMNS = "source_id, window_end, metric, kind, eval_run_id, endpoint, window_start, value, measured, unmeasured"
# One statement per batch, as column arrays; the first row of a key wins (batch order, then the
# table). Returns the batch positions (1-based) of the rows that were new.
_INSERT = (
    "WITH u AS (SELECT DISTINCT ON (s, e, m) * FROM unnest("
    " %s::text[], %s::float8[], %s::text[], %s::text[], %s::text[], %s::text[], %s::float8[], %s::float8[],"
    " %s::int8[], %s::int8[]) WITH ORDINALITY AS u(s, e, m, k, r, ep, ws, v, n, un, o) ORDER BY s, e, m, o),"
    f" fresh AS (INSERT INTO quality_metrics ({_COLUMNS})"
    " SELECT s, to_timestamp(e), m, k, r, ep, to_timestamp(ws), v, n, un FROM u"
    " ON CONFLICT DO NOTHING RETURNING source_id, window_end, metric)"
    " SELECT u.o FROM u JOIN fresh ON fresh.source_id = u.s AND fresh.window_end = to_timestamp(u.e)"
    " AND fresh.metric = u.m"
)


class QualityStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def insert(self, rows: Sequence[QualityMetric]) -> list[QualityMetric]:
        """Insert in one transaction; returns the rows that were new."""
        params = [
            [r.source_id for r in rows],
            [r.window_end for r in rows],
            [r.metric for r in rows],
            [r.kind for r in rows],
            [r.eval_run_id for r in rows],
            [r.endpoint for r in rows],
            [r.window_start for r in rows],
            [r.value for r in rows],
            [r.measured for r in rows],
            [r.unmeasured for r in rows],
        ]
        async with self.db.transaction() as conn:
            cur = await conn.execute(_INSERT, params)
            positions = sorted(row[0] for row in await cur.fetchall())
        return [rows[i - 1] for i in positions]

    async def list_metrics(
        self,
        endpoint: str,
        metric: str,
        start: dt.datetime | None,
        end: dt.datetime | None,
        after: tuple[float, str, str] | None,
        limit: int,
    ) -> list[QualityMetric]:
        """An endpoint's quality metrics by window end, newest first (keyset: window end, source, metric)."""
        where, args = ["endpoint = %s"], [endpoint]
        for clause, value in (
            ("metric = %s", metric or None),
            ("window_end > %s", start),
            ("window_end <= %s", end),
        ):
            if value is not None:
                where.append(clause)
                args.append(value)
        if after is not None:
            # The position as the page's last row read it (epoch seconds), so the boundary is exact.
            where.append("(extract(epoch from window_end)::float8, source_id, metric) < (%s::float8, %s, %s)")
            args += list(after)
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "SELECT endpoint, metric, kind, source_id, eval_run_id, extract(epoch from window_start)::float8,"
                " extract(epoch from window_end)::float8, value, measured, unmeasured FROM quality_metrics"
                f" WHERE {' AND '.join(where)} ORDER BY window_end DESC, source_id DESC, metric DESC LIMIT %s",
                [*args, limit],
            )
            return [QualityMetric(*row) for row in await cur.fetchall()]
