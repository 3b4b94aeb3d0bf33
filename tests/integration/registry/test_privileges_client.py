"""The shared registry-privileges client, as serving and monitoring use it, against the real registry."""

from __future__ import annotations

import pytest

from services.common.errors import AlreadyExists, PermissionDenied
from services.common.registry_privileges import RegistryPrivileges
from tests.integration.registry.conftest import TOKENS

pytestmark = pytest.mark.integration


async def test_a_service_registers_checks_and_unregisters_an_endpoint(registry, unique):
    address = f"127.0.0.1:{registry.grpc_port}"
    service = RegistryPrivileges(address, TOKENS["serving-svc"], cache_s=0)
    user = RegistryPrivileges(address, TOKENS["alice"], cache_s=0)
    name = f"client-{unique}"
    try:
        await service.register("ENDPOINT", name, "alice")
        with pytest.raises(AlreadyExists):
            await service.register("ENDPOINT", name, "bob")
        with pytest.raises(PermissionDenied):
            await user.register("ENDPOINT", f"other-{unique}", "alice")
        assert (await service.check("alice", "ENDPOINT", name, "SELECT")).allowed
        assert not (await service.check("bob", "ENDPOINT", name, "EXECUTE")).allowed
        await service.touch("ENDPOINT", name, "alice")
        await service.unregister("ENDPOINT", name, "alice")
        await service.unregister("ENDPOINT", name, "alice")  # already gone: not an error
    finally:
        await service.close()
        await user.close()
