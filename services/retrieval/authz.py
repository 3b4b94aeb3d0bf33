"""Who may do what to an index: the registry's grants on the index's schema.

Querying needs USE_SCHEMA on `catalog.schema`, writing needs MODIFY. The core
asks an `Authorizer`; the deployment wires the registry-backed one, and
`TESSERA_RETRIEVAL_AUTHZ=none` wires `AllowAll` (logged loudly at start-up).
Decisions are cached briefly: a query must not pay a registry round trip.
"""

from __future__ import annotations

import time
from typing import Protocol

from services.common.auth import Principal

USE_SCHEMA = "USE_SCHEMA"
MODIFY = "MODIFY"


class Authorizer(Protocol):
    async def check(self, principal: Principal, schema_full_name: str, privilege: str) -> None:
        """Return if `principal` holds `privilege` on the schema; raise PermissionDenied otherwise."""


class AllowAll:
    """No authorization: every caller may do everything (for local runs and tests without a registry)."""

    async def check(self, principal: Principal, schema_full_name: str, privilege: str) -> None:
        return None


class DecisionCache:
    """Remembers allow decisions for `ttl_s` seconds (denials are never cached, so a new grant works at once)."""

    def __init__(self, ttl_s: float = 10.0, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._allowed: dict[tuple[str, str, str], float] = {}

    def allowed(self, key: tuple[str, str, str]) -> bool:
        expires = self._allowed.get(key)
        if expires is None:
            return False
        if expires < time.monotonic():
            del self._allowed[key]
            return False
        return True

    def remember(self, key: tuple[str, str, str]) -> None:
        if len(self._allowed) >= self.max_entries:
            self._allowed.clear()
        self._allowed[key] = time.monotonic() + self.ttl_s

    def clear(self) -> None:
        self._allowed.clear()
