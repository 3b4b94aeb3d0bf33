"""The registry-backed Authorizer: `RegistryService.CheckPrivilege` on the index's schema.

Retrieval calls the registry with its own service token and names the user
behind the request; the registry considers ownership, inheritance from the
catalog and superusers. Allow decisions are cached for a few seconds so the
query path does not pay a registry round trip per call.
"""

from __future__ import annotations

import logging

import grpc
from tessera.registry.v1 import registry_pb2, registry_pb2_grpc

from services.common import channels
from services.common.auth import Principal, bearer
from services.common.errors import NotFound, PermissionDenied, Unavailable
from services.retrieval.authz import MODIFY, USE_SCHEMA, DecisionCache

_log = logging.getLogger(__name__)

PRIVILEGES = {USE_SCHEMA: registry_pb2.PRIVILEGE_USE_SCHEMA, MODIFY: registry_pb2.PRIVILEGE_MODIFY}


class RegistryAuthorizer:
    def __init__(self, address: str, service_token: str, *, cache_ttl_s: float = 10.0, timeout_s: float = 5.0) -> None:
        self.address = address
        self._metadata = bearer(service_token)
        self._timeout = timeout_s
        self._cache = DecisionCache(cache_ttl_s)
        self._channel: grpc.aio.Channel | None = None
        self._stub: registry_pb2_grpc.RegistryServiceStub | None = None

    def _registry(self) -> registry_pb2_grpc.RegistryServiceStub:
        # Created on first use, inside the running event loop that grpc.aio binds it to.
        if self._stub is None:
            self._channel = channels.channel(self.address)
            self._stub = registry_pb2_grpc.RegistryServiceStub(self._channel)
        return self._stub

    async def check(self, principal: Principal, schema_full_name: str, privilege: str) -> None:
        key = (principal.name, schema_full_name, privilege)
        if self._cache.allowed(key):
            return
        request = registry_pb2.CheckPrivilegeRequest(
            principal=principal.name,
            securable_type=registry_pb2.SECURABLE_TYPE_SCHEMA,
            securable_full_name=schema_full_name,
            privilege=PRIVILEGES[privilege],
        )
        try:
            reply = await self._registry().CheckPrivilege(request, metadata=self._metadata, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise NotFound(f"schema {schema_full_name!r} does not exist in the registry") from exc
            if exc.code() == grpc.StatusCode.PERMISSION_DENIED:
                _log.error("the registry refused retrieval's privilege check: %s", exc.details())
                raise PermissionDenied(
                    "the registry does not let this retrieval service check privileges"
                    " (its service principal must be in TESSERA_REGISTRY_SERVICE_PRINCIPALS)"
                ) from exc
            raise Unavailable(f"the registry at {self.address} did not answer: {exc.code().name}") from exc
        if not reply.allowed:
            why = f" ({reply.reason})" if reply.reason else ""
            raise PermissionDenied(f"{principal.name} lacks {privilege} on schema {schema_full_name}{why}")
        self._cache.remember(key)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
