"""Who may do what to an index: the registry's grants on the index's schema.

Querying needs USE_SCHEMA on `catalog.schema`, writing needs MODIFY. The core
asks an `Authorizer`; the deployment wires `RegistryAuthorizer` (the shared
`RegistryPrivileges` client: answers cached, dropped on the registry's grant
events), and `TESSERA_RETRIEVAL_AUTHZ=none` wires `AllowAll` (logged loudly at
start-up).
"""

from __future__ import annotations

from typing import Protocol

from tessera.events.v1 import registry_pb2 as events_pb

from services.common.auth import Principal
from services.common.registry_privileges import RegistryPrivileges

USE_SCHEMA = "USE_SCHEMA"
MODIFY = "MODIFY"


class Authorizer(Protocol):
    async def check(self, principal: Principal, schema_full_name: str, privilege: str) -> None:
        """Return if `principal` holds `privilege` on the schema; raise PermissionDenied otherwise."""

    def on_registry_event(self, event: events_pb.RegistryEvent) -> None:
        """Forget cached answers the event may have changed."""

    async def close(self) -> None: ...


class AllowAll:
    """No authorization: every caller may do everything (for local runs and tests without a registry)."""

    async def check(self, principal: Principal, schema_full_name: str, privilege: str) -> None:
        return None

    def on_registry_event(self, event: events_pb.RegistryEvent) -> None:
        return None

    async def close(self) -> None:
        return None


class RegistryAuthorizer:
    """The registry's answer through the shared client (one cache policy, grant-event invalidation)."""

    def __init__(self, privileges: RegistryPrivileges) -> None:
        self.privileges = privileges

    async def check(self, principal: Principal, schema_full_name: str, privilege: str) -> None:
        await self.privileges.require(principal, "SCHEMA", schema_full_name, privilege)

    def on_registry_event(self, event: events_pb.RegistryEvent) -> None:
        self.privileges.on_registry_event(event)

    async def close(self) -> None:
        await self.privileges.close()
