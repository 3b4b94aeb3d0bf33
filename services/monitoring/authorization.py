"""Who may read an endpoint's inference table and use a monitor: the registry's grants.

An endpoint's logged requests need SELECT on the endpoint. A monitor is a
securable of its own, named by its id and owned by its creator: SELECT reads
its profiles, drift metrics and events, MANAGE deletes it. An object the
registry does not know is NOT_FOUND. With authorization off
(`TESSERA_MONITORING_AUTHZ=none`) everything is allowed and monitors are not
registered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from services.common.auth import Principal
from services.common.errors import NotFound
from services.common.registry_privileges import RegistryPrivileges

ENDPOINT = "ENDPOINT"
MONITOR = "MONITOR"
SELECT = "SELECT"
MANAGE = "MANAGE"


class MonitoringAuthorization:
    def __init__(self, privileges: RegistryPrivileges | None) -> None:
        self.privileges = privileges

    async def require_endpoint(self, principal: Principal, endpoint: str, privilege: str = SELECT) -> None:
        if self.privileges is not None:
            await self._require(principal, ENDPOINT, endpoint, privilege)

    async def require_monitor(self, principal: Principal, monitor_id: str, privilege: str = SELECT) -> None:
        if self.privileges is not None:
            await self._require(principal, MONITOR, monitor_id, privilege)

    async def visible_monitors(self, principal: Principal, monitor_ids: Iterable[str]) -> set[str]:
        """The monitors among `monitor_ids` the principal may read (asked concurrently)."""
        ids = list(monitor_ids)
        if self.privileges is None:
            return set(ids)
        answers = await asyncio.gather(*(self._may_read(principal, m) for m in ids))
        return {m for m, allowed in zip(ids, answers, strict=True) if allowed}

    async def register_monitor(self, monitor_id: str, owner: Principal) -> None:
        if self.privileges is not None:
            await self.privileges.register(MONITOR, monitor_id, owner.name)

    async def unregister_monitor(self, monitor_id: str, actor: Principal) -> None:
        if self.privileges is not None:
            await self.privileges.unregister(MONITOR, monitor_id, actor.name)

    async def _may_read(self, principal: Principal, monitor_id: str) -> bool:
        try:
            return await self.privileges.allowed(principal, MONITOR, monitor_id, SELECT)
        except NotFound:
            return False  # not registered (created while authorization was off): hidden

    async def _require(self, principal: Principal, kind: str, name: str, privilege: str) -> None:
        try:
            await self.privileges.require(principal, kind, name, privilege)
        except NotFound as exc:  # the registry does not know it: say so in this service's words
            raise NotFound(
                f"no {kind.lower()} {name!r}", field="monitor_id" if kind == MONITOR else "endpoint"
            ) from exc
