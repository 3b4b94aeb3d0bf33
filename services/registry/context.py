"""What every part of the registry core shares: the database, the policy, the files, the outbox."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from psycopg import AsyncConnection

from services.common.db import Database
from services.common.errors import InvalidArgument, NotFound
from services.common.paging import DEFAULT_PAGE_SIZE, decode_token, encode_token, page_size
from services.registry.access import AccessPolicy, Chain, Privilege
from services.registry.artifact_store import ArtifactStore
from services.registry.events import OUTBOX, PendingEvent
from services.registry.settings import RegistrySettings


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# Registry lists page by offset over the rows a caller may see (MLflow clients ask for big pages).
MAX_PAGE_SIZE = 50_000


def page_window(token: str, requested: int, default: int = DEFAULT_PAGE_SIZE) -> tuple[int, int]:
    """(offset, size) of the page a token asks for; the token is common paging's `{"offset": n}`."""
    offset = decode_token(token).get("offset", 0)
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise InvalidArgument("invalid page token", field="page_token")
    return offset, page_size(requested, default, MAX_PAGE_SIZE)


def next_offset_token(offset: int, size: int, fetched: int) -> str:
    """Callers fetch size + 1 rows: one more than a page means there is another page."""
    return encode_token({"offset": offset + size}) if fetched > size else ""


class Unit:
    """One transaction of the core: its connection and the events that commit with it."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.events: list[PendingEvent] = []

    def emit(self, event: PendingEvent) -> None:
        self.events.append(event)


class RegistryContext:
    def __init__(
        self,
        settings: RegistrySettings,
        db: Database,
        policy: AccessPolicy,
        files: ArtifactStore,
        on_events_committed: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.policy = policy
        self.files = files
        self._on_events = on_events_committed or (lambda: None)

    @asynccontextmanager
    async def unit(self) -> AsyncIterator[Unit]:
        """A transaction whose events go to the outbox in it; the publisher is woken after the commit."""
        async with self.db.transaction() as conn:
            unit = Unit(conn)
            yield unit
            await OUTBOX.add(conn, self.settings.registry_events_topic, [e.for_outbox() for e in unit.events])
        if unit.events:
            self._on_events()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        async with self.db.transaction() as conn:
            yield conn

    def require(self, principal: str, chain: Chain | None, privilege: Privilege, what: str) -> Chain:
        """NOT_FOUND for a missing securable, PERMISSION_DENIED without the privilege."""
        if chain is None:
            raise NotFound(f"{what} does not exist")
        self.policy.require(principal, chain, privilege)
        return chain

    def can(self, principal: str, chain: Chain, privilege: Privilege) -> bool:
        return self.policy.decide(principal, chain, privilege).allowed
