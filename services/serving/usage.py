"""Usage you can trust: prices, limits and budgets enforced at admission, settled by what calls used.

Every admitted call reserves against its endpoint's limits, and those spanning
every endpoint, before it runs — one
request, and its prompt plus `max_tokens` in tokens (and their price) — in
PostgreSQL counters shared by every replica; a limit the reservation would pass
refuses the call (RESOURCE_EXHAUSTED, 429 with Retry-After on HTTP). When the
call ends the reservation is replaced by what it used, and the call is added to
the daily usage table (GetUsage). Cost comes from a per-served-model price
table; a model without a price is "unpriced" (cost absent), never $0.

Leases keep the database off calls' path: a reservation against a large limit
takes a little more than the call needs (at most LEASE_CALLS calls' worth and
LEASE_FRACTION of the limit) and the replica admits the next calls against what is
left, in memory; what a call did not use goes back to the lease. Before a lease runs
out it is topped up in the background (one top-up at a time per counter, never past
that size), so under steady traffic no call waits for the database. Everything
leased is counted in PostgreSQL like a reservation, so replicas together still cannot
pass a limit; a lease no call used for `lease_s` goes back to the counter (and every
lease at stop). Near a limit leases do not fit and every call reserves exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

from prometheus_client import Counter

from services.common.auth import Principal
from services.common.errors import FailedPrecondition, InvalidArgument, PermissionDenied, ResourceExhausted
from services.common.registry_privileges import RegistryPrivileges
from services.serving.entities import check_endpoint_name

_log = logging.getLogger(__name__)

# For dashboards (per replica; GetUsage is the exact, cluster-wide answer). Principals are the
# configured token holders, so the label stays small.
USAGE_TOKENS = Counter(
    "tessera_serving_usage_tokens_total", "Tokens used by admitted calls", ["endpoint", "principal", "kind"]
)
USAGE_COST = Counter("tessera_serving_usage_cost_usd_total", "Cost of priced calls, USD", ["endpoint", "principal"])
USAGE_UNPRICED = Counter(
    "tessera_serving_usage_unpriced_requests_total",
    "Calls served by a model without a price",
    ["endpoint", "principal"],
)
USAGE_REFUSED = Counter(
    "tessera_serving_usage_refused_total", "Calls refused by a usage limit or budget", ["endpoint", "metric"]
)

METRICS = ("requests", "tokens", "cost_usd")
# The limits of a scope (an endpoint, or every endpoint) no call needed for this long are no longer reloaded.
LIMITS_IDLE_S = 600.0
_LIMITS_PER_QUERY = 500
# A lease is at most this many calls' worth of a counter, and at most this share of its limit:
# what one replica holds and has not spent is all another replica can be refused early.
LEASE_CALLS = 16
LEASE_FRACTION = 0.02
PERIODS = ("minute", "day", "month")
EVERY_CALLER, EACH_CALLER = "", "*"
# The endpoint of a limit spanning every endpoint: the principal's calls on all of them count together.
EVERY_ENDPOINT = ""
# A chat template's markup around each message and the generation prompt, in tokens: part of the
# reservation's upper bound on prompt tokens (byte-level tokenizers make at most one token per byte).
TEMPLATE_TOKENS_PER_MESSAGE = 32
MAX_USAGE_ROWS = 10_000
MAX_USAGE_DAYS = 366
_MAX_PRINCIPAL = 128


@dataclass(frozen=True)
class UsageLimit:
    endpoint: str  # EVERY_ENDPOINT: across all endpoints together
    principal: str  # "" every caller together, "*" each caller, else that caller
    metric: str
    period: str
    limit: float

    def check(self) -> UsageLimit:
        if self.endpoint != EVERY_ENDPOINT:
            check_endpoint_name(self.endpoint)
        if len(self.principal) > _MAX_PRINCIPAL or not self.principal.isprintable():
            raise InvalidArgument(f"principals are at most {_MAX_PRINCIPAL} printable characters", field="principal")
        if self.metric not in METRICS:
            raise InvalidArgument(f"metric is one of {', '.join(METRICS)}", field="metric")
        if self.period not in PERIODS:
            raise InvalidArgument(f"period is one of {', '.join(PERIODS)}", field="period")
        if not (math.isfinite(self.limit) and self.limit >= 0):
            raise InvalidArgument("limit must be a finite number >= 0", field="limit")
        return self


@dataclass(frozen=True)
class Charge:
    """One reservation against one counter (the tightest limit on it)."""

    endpoint: str
    principal: str
    metric: str
    period: str
    window_start: datetime
    amount: float
    limit: float

    def key(self) -> tuple:
        return (self.endpoint, self.principal, self.metric, self.period, self.window_start)


@dataclass(frozen=True)
class UsageRow:
    day: date
    endpoint: str
    principal: str
    served_model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    unpriced_requests: int


@dataclass
class Reservation:
    endpoint: str
    principal: str
    charges: list[Charge] = field(default_factory=list)


@dataclass(frozen=True)
class Settlement:
    day: date
    endpoint: str
    principal: str
    served_model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    adjustments: list[tuple[Charge, float]]


@dataclass(frozen=True)
class Release:
    """Leased amounts a replica gives back to their counters, unspent."""

    amounts: dict[tuple, float]


class UsageStorage(Protocol):
    async def limits(self, endpoints: Sequence[str]) -> dict[str, list[UsageLimit]]: ...
    async def set_limit(self, limit: UsageLimit) -> None: ...
    async def remove_limit(self, limit: UsageLimit) -> None: ...
    async def reserve(self, charges: list[Charge]) -> Charge | None: ...
    async def settle(self, settlements: list[Settlement], released: dict[tuple, float]) -> None: ...
    async def usage(self, endpoint: str, principal: str, start: date, end: date, limit: int) -> list[UsageRow]: ...


class Prices:
    """USD per million prompt and completion tokens, per served model (`catalog.schema.model`)."""

    def __init__(self, table: Mapping[str, tuple[float, float]]) -> None:
        self._table = dict(table)

    @classmethod
    def parse(cls, text: str) -> Prices:
        """`{"cat.schema.model": [prompt_usd_per_million, completion_usd_per_million], ...}`."""
        if not text.strip():
            return cls({})
        try:
            raw = json.loads(text)
            table = {str(k): (float(v[0]), float(v[1])) for k, v in raw.items()}
        except (ValueError, TypeError, IndexError, AttributeError) as exc:
            raise ValueError(
                f"TESSERA_SERVING_PRICES is not a JSON object of [prompt, completion] prices: {exc}"
            ) from exc
        if any(not (math.isfinite(p) and p >= 0) for pair in table.values() for p in pair):
            raise ValueError("TESSERA_SERVING_PRICES: prices are finite and >= 0")
        return cls(table)

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
        price = self._table.get(model)
        if price is None:
            return None
        return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6

    def highest(self, models: Sequence[str]) -> tuple[float, float] | None:
        """The highest prompt and completion prices among `models`; None if one has no price."""
        prices = [self._table.get(m) for m in models]
        if not prices or any(p is None for p in prices):
            return None
        return max(p[0] for p in prices), max(p[1] for p in prices)


class UsageMeter:
    """Reservations at admission, settlements off the request path, limits and usage queries."""

    def __init__(
        self,
        store: UsageStorage,
        prices: Prices,
        privileges: RegistryPrivileges,
        *,
        default_max_tokens: int,
        limits_cache_s: float = 5.0,
        lease_s: float = 1.0,
        settle_batch: int = 256,
        admins: frozenset[str] = frozenset(),
    ) -> None:
        """`lease_s`: how long leased amounts stay with this replica unspent; 0 leases nothing."""
        self._admins = admins
        self._store = store
        self.prices = prices
        self._privileges = privileges
        self._default_max_tokens = default_max_tokens
        self._cache_s = limits_cache_s
        self._limits: dict[str, tuple[float, list[UsageLimit]]] = {}  # scope -> (expires, limits)
        self._used: dict[str, float] = {}  # scope -> when a call last needed its limits
        self._loading: dict[str, asyncio.Task] = {}  # scope -> the load under way, shared by every caller
        self._refresher: asyncio.Task | None = None
        self._generation = 0  # bumped by every limit change made here: a load begun before it is dropped
        self._settling: asyncio.Queue[Settlement | Release] = asyncio.Queue()
        self._settle_batch = settle_batch
        self._worker: asyncio.Task | None = None
        self._lease_s = lease_s
        self._leases: dict[tuple, float] = {}  # counter key -> leased here, counted there, not yet spent
        self._lease_used: dict[tuple, float] = {}  # counter key -> when a call last drew on its lease
        self._topping_up: dict[tuple, asyncio.Task] = {}  # counter key -> its top-up under way
        self._lease_generation = 0  # bumped when leases are given back: a top-up begun before goes back too
        self._releaser: asyncio.Task | None = None

    async def start(self) -> None:
        self._worker = asyncio.create_task(self._settle_forever(), name="serving-usage-settle")
        if self._lease_s > 0:
            self._releaser = asyncio.create_task(self._release_forever(), name="serving-usage-leases")
        if self._cache_s > 0:
            self._refresher = asyncio.create_task(self._refresh_forever(), name="serving-usage-limits")

    async def stop(self) -> None:
        for task in (self._releaser, self._refresher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self._topped_up()
        self.release_leases()
        await self.drained()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    async def drained(self) -> None:
        """Wait until every lease top-up under way and every settlement queued so far is written."""
        await self._topped_up()
        await self._settling.join()

    async def _topped_up(self) -> None:
        """Wait for the top-ups under way (one begun later, after leases were given back, gives its own back)."""
        await asyncio.gather(*self._topping_up.values(), return_exceptions=True)

    # -- the request path -------------------------------------------------------------

    async def reserve(
        self, endpoint: str, models: Sequence[str], principal: Principal, prompt_bound: int, max_tokens: int | None
    ) -> Reservation:
        """Reserve one request and its most tokens/cost against every limit, or raise RESOURCE_EXHAUSTED."""
        reservation = Reservation(endpoint, principal.name)
        # The endpoint's own limits and those spanning every endpoint, in one reservation (all or none).
        limits = [
            lim
            for lim in await self._limits_of((endpoint, EVERY_ENDPOINT))
            if lim.principal in (EVERY_CALLER, EACH_CALLER, principal.name)
        ]
        if not limits:
            return reservation
        tokens = prompt_bound + (self._default_max_tokens if max_tokens is None else max_tokens)
        amounts: dict[str, float] = {"requests": 1.0, "tokens": float(tokens)}
        if any(lim.metric == "cost_usd" for lim in limits):
            highest = self.prices.highest(models)
            if highest is None:
                raise FailedPrecondition(
                    f"a cost budget applies to this call but endpoint {endpoint!r} serves a model without a price"
                )
            amounts["cost_usd"] = (prompt_bound * highest[0] + (tokens - prompt_bound) * highest[1]) / 1e6
        now = datetime.now(UTC)
        tightest: dict[tuple, Charge] = {}
        for lim in limits:
            scope = EVERY_CALLER if lim.principal == EVERY_CALLER else principal.name
            charge = Charge(
                lim.endpoint, scope, lim.metric, lim.period, _window(lim.period, now), amounts[lim.metric], lim.limit
            )
            if charge.amount > charge.limit:
                raise _exhausted(charge, now, "this request alone is over")
            known = tightest.get(charge.key())
            if known is None or charge.limit < known.limit:
                tightest[charge.key()] = charge
        reservation.charges = list(tightest.values())
        # What this replica's leases cover is admitted here; the rest (all or none) in PostgreSQL.
        local, remote = [], []
        for charge in reservation.charges:
            leased = self._leases.get(charge.key(), 0.0)
            if leased >= charge.amount:
                self._leases[charge.key()] = leased - charge.amount
                local.append(charge)
            else:
                remote.append(charge)
        if self._leases:
            self._draw(local)
        if not remote:
            return reservation
        try:
            refused = await self._reserve_remote(remote)
        except BaseException:
            self._unspend(local)
            raise
        if refused is not None:
            self._unspend(local)
            USAGE_REFUSED.labels(endpoint, refused.metric).inc()
            raise _exhausted(refused, now, "over")
        return reservation

    async def _reserve_remote(self, charges: list[Charge]) -> Charge | None:
        """Reserve with a lease on top where one fits under the limit, else exactly what the call needs."""
        # No lease on top where a top-up is under way: a lease never passes its size.
        extra = [0.0 if c.key() in self._topping_up else self._lease_size(c) for c in charges]
        if any(extra):
            leasing = [dataclasses.replace(c, amount=c.amount + e) for c, e in zip(charges, extra, strict=True)]
            if await self._store.reserve(leasing) is None:
                for charge, e in zip(charges, extra, strict=True):
                    if e:
                        self._leases[charge.key()] = self._leases.get(charge.key(), 0.0) + e
                        self._lease_used[charge.key()] = time.monotonic()
                return None
        return await self._store.reserve(charges)

    def _draw(self, charges: list[Charge]) -> None:
        """Note that calls drew on these leases; top up those that have less than half their size left."""
        now = time.monotonic()
        for charge in charges:
            key = charge.key()
            self._lease_used[key] = now
            size = self._lease_size(charge)
            left = self._leases.get(key, 0.0)
            if size and left < size / 2 and key not in self._topping_up:
                task = asyncio.create_task(self._top_up(charge, size - left, self._lease_generation))
                self._topping_up[key] = task
                task.add_done_callback(lambda _done, key=key: self._topping_up.pop(key, None))

    async def _top_up(self, charge: Charge, extra: float, generation: int) -> None:
        """Lease `extra` more on `charge`'s counter, off the request path; near the limit it does not fit
        and calls go back to reserving (exactly) themselves."""
        key = charge.key()
        try:
            if await self._store.reserve([dataclasses.replace(charge, amount=extra)]) is not None:
                return
        except Exception as exc:  # noqa: BLE001 - the calls reserve themselves meanwhile
            _log.warning("topping up a usage lease failed: %s", exc)
            return
        if generation != self._lease_generation:
            self._settling.put_nowait(Release({key: extra}))  # leases were given back meanwhile: this one too
            return
        self._leases[key] = self._leases.get(key, 0.0) + extra
        self._lease_used.setdefault(key, time.monotonic())

    def _lease_size(self, charge: Charge) -> float:
        if self._lease_s <= 0:
            return 0.0
        size = min(charge.amount * (LEASE_CALLS - 1), charge.limit * LEASE_FRACTION)
        return size if size >= charge.amount else 0.0

    def _unspend(self, charges: list[Charge]) -> None:
        for charge in charges:
            self._leases[charge.key()] = self._leases.get(charge.key(), 0.0) + charge.amount

    def release_leases(self, endpoint: str | None = None) -> None:
        """Give what this replica leased and has not spent back to the counters (an endpoint's, or all)."""
        self._lease_generation += 1
        self._release([k for k in self._leases if endpoint is None or k[0] == endpoint])

    def _release(self, keys: list[tuple]) -> None:
        released = {}
        for key in keys:
            released[key] = self._leases.pop(key)
            self._lease_used.pop(key, None)
        released = {k: v for k, v in released.items() if v > 0}
        if released:
            self._settling.put_nowait(Release(released))

    async def _release_forever(self) -> None:
        """Give back, about `lease_s` after its last use, a lease no call draws on any more."""
        while True:
            await asyncio.sleep(self._lease_s / 2)
            idle_since = time.monotonic() - self._lease_s
            self._release([k for k in self._leases if self._lease_used.get(k, 0.0) <= idle_since])

    def settle(
        self, reservation: Reservation, served_model: str, prompt_tokens: int, completion_tokens: int
    ) -> float | None:
        """Queue the admitted call's usage (off the request path); returns its cost, None when unpriced."""
        cost = self.prices.cost(served_model, prompt_tokens, completion_tokens) if served_model else None
        who = (reservation.endpoint, reservation.principal)
        USAGE_TOKENS.labels(*who, "prompt").inc(prompt_tokens)
        USAGE_TOKENS.labels(*who, "completion").inc(completion_tokens)
        if cost is not None:
            USAGE_COST.labels(*who).inc(cost)
        elif served_model:
            USAGE_UNPRICED.labels(*who).inc()
        actual = {"requests": 1.0, "tokens": float(prompt_tokens + completion_tokens), "cost_usd": cost or 0.0}
        adjustments = []
        for charge in reservation.charges:
            unused = charge.amount - actual[charge.metric]
            if unused >= 0 and charge.key() in self._leases:
                self._leases[charge.key()] += unused  # back to this replica's lease: counted there already
            elif unused != 0:
                adjustments.append((charge, actual[charge.metric]))
        self._settling.put_nowait(
            Settlement(
                day=datetime.now(UTC).date(),
                endpoint=reservation.endpoint,
                principal=reservation.principal,
                served_model=served_model,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                cost_usd=cost,
                adjustments=adjustments,
            )
        )
        return cost

    async def _settle_forever(self) -> None:
        while True:
            batch = [await self._settling.get()]
            while len(batch) < self._settle_batch and not self._settling.empty():
                batch.append(self._settling.get_nowait())
            settlements = [item for item in batch if isinstance(item, Settlement)]
            released: dict[tuple, float] = {}
            for item in batch:
                if isinstance(item, Release):
                    for key, amount in item.amounts.items():
                        released[key] = released.get(key, 0.0) + amount
            try:
                await self._store.settle(settlements, released)
            except Exception:  # noqa: BLE001 - a lost settlement leaves its reservation counted (never under)
                _log.exception("settling %d calls' usage failed", len(settlements))
            finally:
                for _ in batch:
                    self._settling.task_done()

    async def _limits_of(self, scopes: Sequence[str]) -> list[UsageLimit]:
        """The limits of `scopes`, cached for the cache time; the database is asked only for a scope no
        call used lately (the refresher keeps the others loaded), in one query shared by concurrent callers."""
        now = time.monotonic()
        found: list[UsageLimit] = []
        missing = []
        for scope in scopes:
            self._used[scope] = now
            cached = self._limits.get(scope)
            if cached is not None and cached[0] > now:
                found.extend(cached[1])
            else:
                missing.append(scope)
        if missing:
            for limits in (await self._load(missing)).values():
                found.extend(limits)
        return found

    async def _load(self, scopes: Sequence[str]) -> dict[str, list[UsageLimit]]:
        """Load and cache `scopes`: one query for those not being loaded already, joining the loads under way."""
        new = [scope for scope in scopes if scope not in self._loading]
        if new:
            task = asyncio.ensure_future(self._fetch(new))
            for scope in new:
                self._loading[scope] = task
            task.add_done_callback(lambda done, new=new: self._loaded(new, done))
        tasks = {scope: self._loading[scope] for scope in scopes}
        # Shielded: a caller that goes away does not cancel a load other callers wait for.
        return {scope: (await asyncio.shield(task))[scope] for scope, task in tasks.items()}

    async def _fetch(self, scopes: list[str]) -> dict[str, list[UsageLimit]]:
        generation, started = self._generation, time.monotonic()
        limits = await self._store.limits(scopes)
        if generation == self._generation:  # no limit was changed here while it loaded
            for scope in scopes:
                self._limits[scope] = (started + self._cache_s, limits[scope])
        return limits

    def _loaded(self, scopes: list[str], task: asyncio.Future) -> None:
        for scope in scopes:
            if self._loading.get(scope) is task:
                del self._loading[scope]
        if not task.cancelled() and task.exception() is not None:
            _log.warning("loading the usage limits of %d scope(s) failed: %s", len(scopes), task.exception())

    async def _refresh_forever(self) -> None:
        """Reload the limits of every scope in use twice per cache time, so they never expire under traffic
        and no call waits for the database for them (a change made on another replica still counts
        within the cache time); a scope no call needed for LIMITS_IDLE_S is dropped."""
        while True:
            await asyncio.sleep(self._cache_s / 2)
            now = time.monotonic()
            for scope in [s for s, used in self._used.items() if now - used > LIMITS_IDLE_S]:
                del self._used[scope]
                self._limits.pop(scope, None)
            scopes = list(self._used)
            for first in range(0, len(scopes), _LIMITS_PER_QUERY):
                with contextlib.suppress(Exception):  # logged by _loaded; the next turn tries again
                    await self._load(scopes[first : first + _LIMITS_PER_QUERY])

    # -- administration -----------------------------------------------------------------

    async def set_limit(self, limit: UsageLimit, principal: Principal, *, remove: bool = False) -> UsageLimit:
        limit.check()
        if limit.endpoint == EVERY_ENDPOINT:
            if principal.name not in self._admins:
                raise PermissionDenied(
                    f"permission denied: {principal.name} may not set limits across every endpoint"
                    " (TESSERA_SERVING_USAGE_ADMINS)"
                )
        else:
            await self._privileges.require(principal, "ENDPOINT", limit.endpoint, "MANAGE")
        if remove:
            await self._store.remove_limit(limit)
        else:
            await self._store.set_limit(limit)
        self._generation += 1
        self._limits.pop(limit.endpoint, None)
        self.release_leases(limit.endpoint)  # leased under the old limit: the new one applies from here
        return limit

    async def list_limits(self, endpoint: str, principal: Principal) -> list[UsageLimit]:
        """An endpoint's limits (MANAGE on it); those spanning every endpoint: all for usage administrators,
        the ones that apply to the caller for anyone else."""
        if endpoint == EVERY_ENDPOINT:
            limits = (await self._store.limits([EVERY_ENDPOINT]))[EVERY_ENDPOINT]
            if principal.name in self._admins:
                return limits
            return [lim for lim in limits if lim.principal in (EVERY_CALLER, EACH_CALLER, principal.name)]
        check_endpoint_name(endpoint)
        await self._privileges.require(principal, "ENDPOINT", endpoint, "MANAGE")
        return (await self._store.limits([endpoint]))[endpoint]

    async def usage(
        self, endpoint: str, who: str, start: datetime | None, end: datetime | None, principal: Principal
    ) -> list[UsageRow]:
        """Daily usage: yours on any endpoint, or anyone's on an endpoint you hold SELECT on."""
        if endpoint:
            check_endpoint_name(endpoint)
        if who != principal.name:
            if not endpoint:
                raise PermissionDenied("asking about others' usage needs an endpoint you hold SELECT on")
            await self._privileges.require(principal, "ENDPOINT", endpoint, "SELECT")
        last = (end or datetime.now(UTC)).astimezone(UTC).date()
        first = start.astimezone(UTC).date() if start else last - timedelta(days=30)
        if first > last or (last - first).days > MAX_USAGE_DAYS:
            raise InvalidArgument(f"start must be before end, at most {MAX_USAGE_DAYS} days apart", field="start")
        return await self._store.usage(endpoint, who, first, last, MAX_USAGE_ROWS)


def prompt_bound(prompt: str | None, messages: Sequence[Mapping[str, Any]] | None) -> int:
    """An upper bound on the prompt's tokens: its UTF-8 bytes, plus the chat template's markup."""
    if messages is not None:
        return sum(len(str(m.get("content", "")).encode()) + TEMPLATE_TOKENS_PER_MESSAGE for m in messages) + (
            TEMPLATE_TOKENS_PER_MESSAGE
        )
    return len((prompt or "").encode()) + TEMPLATE_TOKENS_PER_MESSAGE


def _window(period: str, now: datetime) -> datetime:
    if period == "minute":
        return now.replace(second=0, microsecond=0)
    if period == "day":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _window_end(period: str, start: datetime) -> datetime:
    if period == "minute":
        return start + timedelta(minutes=1)
    if period == "day":
        return start + timedelta(days=1)
    return (start + timedelta(days=32)).replace(day=1)


def _exhausted(charge: Charge, now: datetime, what: str) -> ResourceExhausted:
    who = "the callers together" if charge.principal == EVERY_CALLER else charge.principal
    where = "across every endpoint" if charge.endpoint == EVERY_ENDPOINT else f"on endpoint {charge.endpoint!r}"
    error = ResourceExhausted(
        f"{what} the {charge.metric} limit of {charge.limit:g} per {charge.period} {where} for {who}"
    )
    # When the window ends: a client told to retry sooner would only be refused again.
    error.retry_after_s = max(1, math.ceil((_window_end(charge.period, charge.window_start) - now).total_seconds()))
    return error
