"""In-memory stand-ins for the registry pieces serving's endpoint core depends on.

They let the endpoint lifecycle (store writes, deployments, paging, races) run
on the real PostgreSQL without a registry process: `Privileges` answers like
RegistryPrivileges (owners and grants of ENDPOINT securables, EXECUTE on
models), `Catalog` like RegistryCatalog (READY versions, aliases, content ids),
and `Runtime` is a tensor model that answers with its version.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from services.common.auth import Principal
from services.common.errors import AlreadyExists, FailedPrecondition, NotFound, PermissionDenied
from services.serving.entities import TENSOR, ResolvedVersion


def _who(principal: Principal | str) -> str:
    return principal.name if isinstance(principal, Principal) else principal


class Privileges:
    enforce = True

    def __init__(self) -> None:
        self.owners: dict[tuple[str, str], str] = {}
        self.grants: set[tuple[str, str, str, str]] = set()  # (principal, type, name, privilege)
        self.events: list[tuple[str, str]] = []
        self.fail_register = False

    def grant(self, principal: str, securable_type: str, name: str, privilege: str) -> None:
        self.grants.add((principal, securable_type, name, privilege))

    async def allowed(self, principal, securable_type: str, name: str, privilege: str) -> bool:
        who = _who(principal)
        if securable_type == "ENDPOINT" and (securable_type, name) not in self.owners:
            raise NotFound(f"registry: endpoint {name}: not found")
        if self.owners.get((securable_type, name)) == who:
            return True
        return (who, securable_type, name, privilege) in self.grants or (
            who,
            securable_type,
            name,
            "MANAGE",
        ) in self.grants

    async def check(self, principal, securable_type: str, name: str, privilege: str) -> bool:
        return await self.allowed(principal, securable_type, name, privilege)

    async def require(self, principal, securable_type: str, name: str, privilege: str) -> None:
        if not await self.allowed(principal, securable_type, name, privilege):
            raise PermissionDenied(f"permission denied: {_who(principal)} lacks {privilege} on {name}")

    async def register(self, securable_type: str, name: str, owner: str) -> None:
        if self.fail_register:
            raise PermissionDenied("the registry does not let this service act for callers")
        if (securable_type, name) in self.owners:
            raise AlreadyExists(f"registry: {name}: exists")
        self.owners[(securable_type, name)] = owner
        self.events.append(("REGISTERED", name))

    async def touch(self, securable_type: str, name: str, actor: str) -> None:
        self.events.append(("CHANGED", name))

    async def unregister(self, securable_type: str, name: str, actor: str) -> None:
        self.owners.pop((securable_type, name), None)
        self.events.append(("UNREGISTERED", name))


class Catalog:
    """Models by name: version -> status; aliases; a generation that changes when a model is re-created."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.versions: dict[str, dict[int, str]] = {}
        self.aliases: dict[tuple[str, str], int] = {}
        self.generation: dict[str, int] = {}

    def add(self, model_name: str, version: int, status: str = "READY") -> None:
        self.versions.setdefault(model_name, {})[version] = status
        self.generation.setdefault(model_name, 1)

    async def resolve(self, model_name: str, version: int | None, alias: str | None) -> ResolvedVersion:
        await asyncio.sleep(0)
        if alias:
            if (model_name, alias) not in self.aliases:
                raise NotFound(f"{model_name}@{alias} not found")
            version = self.aliases[(model_name, alias)]
        status = self.versions.get(model_name, {}).get(version or 0)
        if status is None:
            raise NotFound(f"{model_name} v{version} not found")
        if status != "READY":
            raise FailedPrecondition(f"{model_name} v{version} is {status}, not READY")
        return ResolvedVersion(model_name, version, f"{model_name}-{version}-g{self.generation[model_name]}")

    async def fetch(self, version: ResolvedVersion) -> Path:
        target = self.folder / version.content_id
        target.mkdir(parents=True, exist_ok=True)
        (target / "version").write_text(str(version.version))
        return target

    async def record_lineage(self, model_name: str, version: int, endpoint: str) -> None:
        return None

    async def close(self) -> None:
        return None


class Runtime:
    """A tensor model that answers {"version": [v]} after `delay_s`; counts how many run at once."""

    kind = TENSOR
    running = 0
    delay_s = 0.0
    load_s = 0.0

    def __init__(self, folder: Path) -> None:
        self.version = int((folder / "version").read_text())
        self.stopped = False

    async def start(self) -> None:
        await asyncio.sleep(Runtime.load_s)
        Runtime.running += 1

    async def stop(self) -> None:
        self.stopped = True
        Runtime.running -= 1

    def inputs(self):
        return []

    def outputs(self):
        return []

    async def infer(self, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.stopped:
            raise RuntimeError("the model is unloaded")
        await asyncio.sleep(Runtime.delay_s)
        if self.stopped:
            raise RuntimeError("the model was unloaded during the request")
        return {"version": np.array([self.version])}
