"""Usage on a real PostgreSQL: reservations against counters, settlements in batches, replicas' leases."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, date, datetime

import pytest

from services.common.auth import Principal
from services.common.db import Database, migrate
from services.common.errors import ResourceExhausted
from services.serving.store import MIGRATIONS
from services.serving.usage import LEASE_CALLS, Charge, Prices, Settlement, UsageLimit, UsageMeter
from services.serving.usage_store import UsageStore

ALICE = Principal("alice")


def _today() -> date:
    return datetime.now(UTC).date()  # usage days are UTC days


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
    return Settlement(_today(), charge.endpoint, "alice", served_model, 10, int(used) - 10, cost, [(charge, used)])


async def _meter(store: UsageStore, lease_s: float) -> UsageMeter:
    meter = UsageMeter(store, Prices({}), None, default_max_tokens=16, lease_s=lease_s)  # type: ignore[arg-type]
    await meter.start()
    return meter


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
    rows = {(r.endpoint, r.served_model): r for r in await store.usage("", "alice", _today(), _today(), 10)}
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
    assert 6 <= len(admitted) <= 9
    assert await store.counter(charge) == 20.0 * len(admitted) <= limit


class _TaskCountedStore:
    """The real store, counting the reservations each asyncio task asked it for."""

    def __init__(self, store: UsageStore) -> None:
        self._store = store
        self.reserves: dict[asyncio.Task | None, int] = {}

    async def reserve(self, charges):
        task = asyncio.current_task()
        self.reserves[task] = self.reserves.get(task, 0) + 1
        return await self._store.reserve(charges)

    def __getattr__(self, name: str):
        return getattr(self._store, name)


async def test_leases_admit_calls_without_the_database_topped_up_in_the_background_and_the_rest_goes_back(
    store: UsageStore,
) -> None:
    await store.set_limit(UsageLimit("big", "", "tokens", "day", 1e9))
    counted = _TaskCountedStore(store)
    meter = UsageMeter(counted, Prices({}), None, default_max_tokens=16, lease_s=3600)  # type: ignore[arg-type]
    await meter.start()
    calls = 8 * LEASE_CALLS
    try:
        first = await meter.reserve("big", [], ALICE, prompt_bound=84, max_tokens=16)
        (charge,) = first.charges
        leased = await store.counter(charge)
        meter.settle(first, "m", 20, 10)
        for _ in range(calls - 1):
            meter.settle(await meter.reserve("big", [], ALICE, 84, 16), "m", 20, 10)
            await meter.drained()  # the top-ups begun meanwhile are written, as time would have them
        held = await store.counter(charge)
        meter.release_leases()
        await meter.drained()
        settled = await store.counter(charge)
    finally:
        await meter.stop()

    me = asyncio.current_task()
    assert counted.reserves[me] == 1  # only the first call waited for PostgreSQL
    assert sum(n for task, n in counted.reserves.items() if task is not me) >= 3  # the top-ups, off the calls' path
    assert leased == LEASE_CALLS * 100.0  # the first round trip reserved sixteen calls' worth
    assert held <= calls * 30.0 + LEASE_CALLS * 100.0  # used, plus at most one lease's worth held unspent
    assert settled == calls * 30.0  # given back: the counter holds exactly what was used
    (row,) = await store.usage("big", "alice", _today(), _today(), 10)
    assert (row.requests, row.prompt_tokens, row.completion_tokens) == (calls, calls * 20, calls * 10)


async def test_a_lease_no_call_draws_on_goes_back_to_its_counter(store: UsageStore) -> None:
    await store.set_limit(UsageLimit("idle", "", "tokens", "day", 1e9))
    meter = await _meter(store, lease_s=0.2)
    try:
        reservation = await meter.reserve("idle", [], ALICE, prompt_bound=84, max_tokens=16)
        (charge,) = reservation.charges
        meter.settle(reservation, "m", 20, 10)
        await meter.drained()
        leased = await store.counter(charge)
        for _ in range(300):  # the releaser's turn comes within a lease time of the last use
            if await store.counter(charge) == 30.0:
                break
            await asyncio.sleep(0.05)
        idle = await store.counter(charge)
    finally:
        await meter.stop()

    assert leased == LEASE_CALLS * 100.0  # the call's unused 70 went back to the lease, not yet to the counter
    assert idle == 30.0  # nobody drew on the lease: it went back without a stop or a limit change


async def test_two_replicas_leasing_one_budget_never_pass_it_together(store: UsageStore) -> None:
    limit = 20_000.0  # 200 calls' reservations; leases of 400 fit until near the end
    await store.set_limit(UsageLimit("shared", "", "tokens", "day", limit))
    replicas = [await _meter(store, lease_s=0.05), await _meter(store, lease_s=0.05)]
    used: list[int] = []
    refused = 0

    async def call(i: int) -> None:
        nonlocal refused
        meter = replicas[i % 2]
        try:
            reservation = await meter.reserve("shared", [], ALICE, prompt_bound=84, max_tokens=16)
        except ResourceExhausted:
            refused += 1
            return
        await asyncio.sleep(random.random() * 0.01)
        completion = random.randint(1, 16)
        used.append(84 + completion)
        meter.settle(reservation, "m", 84, completion)

    try:
        await asyncio.gather(*(call(i) for i in range(400)))
    finally:
        for meter in replicas:
            await meter.stop()

    charge = _charge("shared", 0.0, limit)
    assert refused > 0 and used
    assert sum(used) <= limit
    assert await store.counter(charge) == sum(used)  # every lease given back at stop


class _CountedStore:
    """The real store, counting the limit loads it is asked for and able to hold them back."""

    def __init__(self, store: UsageStore) -> None:
        self._store = store
        self.loads: list[list[str]] = []
        self.open = asyncio.Event()
        self.open.set()

    async def limits(self, endpoints):
        self.loads.append(list(endpoints))
        await self.open.wait()
        return await self._store.limits(endpoints)

    def __getattr__(self, name: str):
        return getattr(self._store, name)


async def test_limits_in_use_are_loaded_once_for_concurrent_callers_and_kept_fresh(store: UsageStore) -> None:
    await store.set_limit(UsageLimit("kept", "", "requests", "day", 1e6))
    counted = _CountedStore(store)
    meter = UsageMeter(counted, Prices({}), None, default_max_tokens=16, limits_cache_s=2.0, lease_s=0)  # type: ignore[arg-type]
    await meter.start()
    try:
        # Twenty calls to a scope nobody used yet: one query, for the endpoint and every endpoint at once.
        await asyncio.gather(*(meter.reserve("kept", [], ALICE, 10, 10) for _ in range(20)))
        assert counted.loads == [["kept", ""]]
        # Past the cache time the refresher has reloaded them: a call finds them without the database.
        await asyncio.sleep(2.5)
        assert len(counted.loads) > 1
        counted.open.clear()
        reservation = await asyncio.wait_for(meter.reserve("kept", [], ALICE, 10, 10), timeout=0.9)
        assert reservation.charges  # the limit applied, from the cache
        counted.open.set()
    finally:
        counted.open.set()
        await meter.stop()
