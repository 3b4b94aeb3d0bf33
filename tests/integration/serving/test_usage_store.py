"""The usage store on a real PostgreSQL: reservations against counters, settlements in batches."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime

import pytest

from services.common.db import Database, migrate
from services.serving.store import MIGRATIONS
from services.serving.usage import Charge, Settlement
from services.serving.usage_store import UsageStore


@pytest.fixture
async def store(pg_dsn: str, unique: str):
    db = await Database(pg_dsn, f"usage_{unique}").open()
    await migrate(db, MIGRATIONS)
    try:
        yield UsageStore(db)
    finally:
        await db.close()


def _charge(endpoint: str, amount: float, limit: float = 1000.0) -> Charge:
    window = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return Charge(endpoint, "", "tokens", "day", window, amount, limit)


def _settled(charge: Charge, used: float, served_model: str, cost: float | None) -> Settlement:
    return Settlement(date.today(), charge.endpoint, "alice", served_model, 10, int(used) - 10, cost, [(charge, used)])


async def test_a_batch_sums_what_its_calls_used_per_counter_and_per_daily_row(store: UsageStore) -> None:
    a, b = _charge("a", 100.0), _charge("b", 50.0)
    for charge in (a, a, a, b):
        assert await store.reserve([charge]) is None
    assert await store.counter(a) == 300.0

    await store.settle(
        [
            _settled(a, 30.0, "m1", 0.5),
            _settled(a, 40.0, "m1", None),  # unpriced: counted as such, never as $0
            _settled(a, 100.0, "m2", 1.0),  # used all it reserved: no adjustment
            _settled(b, 20.0, "m1", 0.25),
        ]
    )

    assert await store.counter(a) == 170.0
    assert await store.counter(b) == 20.0
    rows = {(r.endpoint, r.served_model): r for r in await store.usage("", "alice", date.today(), date.today(), 10)}
    assert (rows["a", "m1"].requests, rows["a", "m1"].prompt_tokens, rows["a", "m1"].completion_tokens) == (2, 20, 50)
    assert (rows["a", "m1"].cost_usd, rows["a", "m1"].unpriced_requests) == (0.5, 1)
    assert (rows["a", "m2"].requests, rows["b", "m1"].requests, rows["b", "m1"].cost_usd) == (1, 1, 0.25)


async def test_concurrent_reservations_and_settlements_never_pass_the_limit(store: UsageStore) -> None:
    limit = 200.0
    charge = _charge("shared", 30.0, limit)
    admitted = []

    async def call(i: int) -> None:
        if await store.reserve([charge]) is None:
            admitted.append(i)
            await store.settle([_settled(charge, 20.0, "m", None)])

    await asyncio.gather(*(call(i) for i in range(40)))

    # Each admitted call held 30 until it settled at 20: the counter never passed 200 on the way.
    assert 6 <= len(admitted) <= 10
    assert await store.counter(charge) == 20.0 * len(admitted) <= limit
