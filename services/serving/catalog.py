"""What serving needs from the model registry, as an interface the core depends on.

`RegistryCatalog` (registry_catalog.py) implements it over the registry's gRPC
API; the core never sees gRPC. Privileges are asked through the common
`RegistryPrivileges` client, not here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from services.serving.entities import ResolvedVersion


class ModelCatalog(Protocol):
    async def resolve(self, model_name: str, version: int | None, alias: str | None) -> ResolvedVersion:
        """The READY version a served model means now (NotFound if unknown, FailedPrecondition if not READY)."""

    async def fetch(self, version: ResolvedVersion) -> Path:
        """A local folder holding exactly that version's files (downloaded once, keyed by its content id)."""

    async def record_lineage(self, model_name: str, version: int, endpoint: str) -> None:
        """Record the edge model version -> serving endpoint (idempotent)."""

    async def close(self) -> None: ...
