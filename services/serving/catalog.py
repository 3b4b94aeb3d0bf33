"""What serving needs from the model registry, as an interface the core depends on.

`RegistryCatalog` (registry_catalog.py) implements it over the registry's gRPC
API; the core never sees gRPC.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class ModelCatalog(Protocol):
    async def resolve(self, model_name: str, version: int | None, alias: str | None) -> int:
        """The version number a served model means now (NotFound if the model, version or alias is unknown)."""

    async def fetch(self, model_name: str, version: int) -> Path:
        """A local folder holding the version's files (downloaded once into the cache)."""

    async def check_execute(self, principal: str, model_name: str) -> None:
        """Raise PermissionDenied unless `principal` may use (EXECUTE) the model."""

    async def record_lineage(self, model_name: str, version: int, endpoint: str) -> None:
        """Record the edge model version -> serving endpoint (idempotent)."""

    async def close(self) -> None: ...
