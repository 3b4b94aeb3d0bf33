"""PostgreSQL for usage limits, the counters every replica admits against, and settled daily usage."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import date

import psycopg

from services.common.db import Database
from services.serving.usage import Charge, Settlement, UsageLimit, UsageRow


class _Refused(Exception):
    def __init__(self, charge: Charge) -> None:
        self.charge = charge


# Add a charge to its counter unless that passes the limit; no row back when it would.
_RESERVE = (
    "INSERT INTO usage_counters (endpoint, principal, metric, period, window_start, used)"
    " VALUES (%s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (endpoint, principal, metric, period, window_start)"
    " DO UPDATE SET used = usage_counters.used + EXCLUDED.used"
    " WHERE usage_counters.used + EXCLUDED.used <= %s RETURNING used"
)


# A batch of settlements: counter adjustments and daily rows, each array one column. The UPDATE in
# WITH runs once whether or not anything reads it; the INSERT is the statement itself.
_SETTLE = (
    "WITH adjusted AS ("
    " UPDATE usage_counters c SET used = GREATEST(c.used + a.delta, 0)"
    " FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::timestamptz[], %s::float8[])"
    " AS a(endpoint, principal, metric, period, window_start, delta)"
    " WHERE c.endpoint = a.endpoint AND c.principal = a.principal AND c.metric = a.metric"
    " AND c.period = a.period AND c.window_start = a.window_start"
    ") INSERT INTO usage_daily (day, endpoint, principal, served_model, requests, prompt_tokens,"
    " completion_tokens, cost_usd, unpriced_requests)"
    " SELECT * FROM unnest(%s::date[], %s::text[], %s::text[], %s::text[], %s::int8[], %s::int8[], %s::int8[],"
    " %s::float8[], %s::int8[])"
    " ON CONFLICT (day, endpoint, principal, served_model) DO UPDATE SET"
    " requests = usage_daily.requests + EXCLUDED.requests,"
    " prompt_tokens = usage_daily.prompt_tokens + EXCLUDED.prompt_tokens,"
    " completion_tokens = usage_daily.completion_tokens + EXCLUDED.completion_tokens,"
    " cost_usd = usage_daily.cost_usd + EXCLUDED.cost_usd,"
    " unpriced_requests = usage_daily.unpriced_requests + EXCLUDED.unpriced_requests"
)
_SETTLE_ATTEMPTS = 3


@asynccontextmanager
async def _autocommit(db: Database) -> AsyncIterator[psycopg.AsyncConnection]:
    """A pooled connection in autocommit for one statement: one round trip, no BEGIN/COMMIT.

    A connection that broke meanwhile goes back as it is (the pool discards it): the
    statement's own error is the one raised."""
    async with db.connection() as conn:
        await conn.set_autocommit(True)
        try:
            yield conn
        finally:
            if not conn.broken:
                await conn.set_autocommit(False)


class UsageStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def limits(self, endpoints: Sequence[str]) -> dict[str, list[UsageLimit]]:
        """The limits of each of `endpoints` (EVERY_ENDPOINT among them: those spanning all), in one query."""
        found: dict[str, list[UsageLimit]] = {endpoint: [] for endpoint in endpoints}
        async with _autocommit(self._db) as conn:
            cur = await conn.execute(
                "SELECT endpoint, principal, metric, period, max_value FROM usage_limits"
                " WHERE endpoint = ANY(%s) ORDER BY endpoint, principal, metric, period",
                (list(found),),
            )
            for row in await cur.fetchall():
                found[row[0]].append(UsageLimit(*row))
        return found

    async def set_limit(self, limit: UsageLimit) -> None:
        async with self._db.transaction() as conn:
            await conn.execute(
                "INSERT INTO usage_limits (endpoint, principal, metric, period, max_value) VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (endpoint, principal, metric, period) DO UPDATE SET max_value = EXCLUDED.max_value",
                (limit.endpoint, limit.principal, limit.metric, limit.period, limit.limit),
            )

    async def remove_limit(self, limit: UsageLimit) -> None:
        async with self._db.transaction() as conn:
            await conn.execute(
                "DELETE FROM usage_limits WHERE endpoint = %s AND principal = %s AND metric = %s AND period = %s",
                (limit.endpoint, limit.principal, limit.metric, limit.period),
            )

    async def reserve(self, charges: list[Charge]) -> Charge | None:
        """Add every charge, or none of them: the first charge that would go over its limit, else None.

        The conditional upsert takes the counter's row lock, so concurrent
        reservations from any replica are serialised and none can overspend.
        """
        if len(charges) == 1:
            # One statement is atomic on its own: no BEGIN/COMMIT round trips on the request path.
            async with _autocommit(self._db) as conn:
                cur = await conn.execute(_RESERVE, (*charges[0].key(), charges[0].amount, charges[0].limit))
                return None if await cur.fetchone() is not None else charges[0]
        try:
            async with self._db.transaction() as conn:
                for charge in sorted(charges, key=Charge.key):  # one order everywhere: no deadlocks
                    cur = await conn.execute(_RESERVE, (*charge.key(), charge.amount, charge.limit))
                    if await cur.fetchone() is None:
                        raise _Refused(charge)
        except _Refused as refused:
            return refused.charge
        return None

    async def settle(self, settlements: list[Settlement], released: dict[tuple, float] | None = None) -> None:
        """Replace reservations by what the calls used, give back `released` leases (counter key ->
        amount), and add the calls to the daily usage.

        One statement for the whole batch, its adjustments summed per counter and its calls per
        daily row: a counter's row lock is held for that statement only, not across round trips,
        so reservations waiting on it (any replica's) wait microseconds. A deadlock with another
        replica's batch is retried: it rolled the whole statement back.
        """
        deltas: dict[tuple, float] = defaultdict(float)
        daily: dict[tuple, list[float]] = {}
        for s in settlements:
            for charge, actual in s.adjustments:
                if actual != charge.amount:
                    deltas[charge.key()] += actual - charge.amount
            row = daily.setdefault((s.day, s.endpoint, s.principal, s.served_model), [0, 0, 0, 0.0, 0])
            row[0] += 1
            row[1] += s.prompt_tokens
            row[2] += s.completion_tokens
            row[3] += s.cost_usd or 0.0
            row[4] += 1 if s.cost_usd is None else 0
        for key, amount in (released or {}).items():
            deltas[key] -= amount
        if not deltas and not daily:
            return
        counters = sorted(deltas)  # one lock order for every replica's statements
        days = sorted(daily)
        params = (
            [k[0] for k in counters],
            [k[1] for k in counters],
            [k[2] for k in counters],
            [k[3] for k in counters],
            [k[4] for k in counters],
            [deltas[k] for k in counters],
            [d[0] for d in days],
            [d[1] for d in days],
            [d[2] for d in days],
            [d[3] for d in days],
            *([daily[d][i] for d in days] for i in range(5)),
        )
        for attempt in range(_SETTLE_ATTEMPTS):
            try:
                async with _autocommit(self._db) as conn:
                    await conn.execute(_SETTLE, params)
                return
            except psycopg.errors.DeadlockDetected:
                if attempt == _SETTLE_ATTEMPTS - 1:
                    raise

    async def counter(self, charge: Charge) -> float:
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "SELECT used FROM usage_counters WHERE endpoint = %s AND principal = %s AND metric = %s"
                " AND period = %s AND window_start = %s",
                charge.key(),
            )
            row = await cur.fetchone()
        return row[0] if row else 0.0

    async def usage(self, endpoint: str, principal: str, start: date, end: date, limit: int) -> list[UsageRow]:
        """Daily rows in [start, end], filtered by endpoint and principal when given."""
        async with self._db.connection() as conn:
            cur = await conn.execute(
                "SELECT day, endpoint, principal, served_model, requests, prompt_tokens, completion_tokens,"
                " cost_usd, unpriced_requests FROM usage_daily WHERE day BETWEEN %s AND %s"
                " AND (%s = '' OR endpoint = %s) AND (%s = '' OR principal = %s)"
                " ORDER BY day, endpoint, principal, served_model LIMIT %s",
                (start, end, endpoint, endpoint, principal, principal, limit),
            )
            return [UsageRow(*row) for row in await cur.fetchall()]
