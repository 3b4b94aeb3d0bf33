"""Who may read and write which artifacts, and where a model version's files come from.

Targets are runs, model versions and logged models; the MLflow artifact proxy
addresses the same files by path (`<experiment id>/...` or
`registry/<model>/versions/<n>/...`), authorized the same way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from services.registry.access import Privilege
from services.registry.context import RegistryContext
from services.registry.entities import FileInfo
from services.registry.logged_model_service import LoggedModels
from services.registry.model_service import PENDING, ModelRegistry
from services.registry.names import clean_relative_path
from services.registry.store import models as model_store
from services.registry.store import tracking
from services.registry.tracking_service import TrackingService


@dataclass(frozen=True)
class Target:
    run_id: str = ""
    model_name: str = ""
    version: int = 0
    logged_model_id: str = ""


class ArtifactService:
    def __init__(
        self, ctx: RegistryContext, runs: TrackingService, models: ModelRegistry, logged: LoggedModels
    ) -> None:
        self.ctx = ctx
        self.runs = runs
        self.models = models
        self.logged = logged

    async def location(self, principal: str, target: Target, write: bool) -> str:
        """The target's folder relative to the artifact root, once the caller may read (or write) it."""
        privilege = Privilege.MODIFY if write else Privilege.EXECUTE
        if target.run_id:
            return await self.runs.run_artifact_location(principal, target.run_id, privilege)
        if target.model_name:
            version = await self.models.get_version(principal, target.model_name, target.version, privilege)
            if write and version.status != PENDING:
                raise FailedPrecondition(
                    f"model version {target.model_name}/{target.version} is {version.status}; its files are final"
                )
            return self.models.storage_relative(version)
        if target.logged_model_id:
            model = await self.logged.get(principal, target.logged_model_id, privilege)
            return self.ctx.files.relative(model.artifact_location)
        raise InvalidArgument("artifact target is required (run_id, model_version or logged_model_id)", field="target")

    async def list(self, principal: str, target: Target, path: str = "") -> list[FileInfo]:
        relative = await self.location(principal, target, write=False)
        return await self.ctx.files.list(relative, clean_relative_path(path))

    async def download(
        self, principal: str, target: Target, path: str = "", chunk_size: int = 0
    ) -> AsyncIterator[tuple[str, bytes, int, int]]:
        relative = await self.location(principal, target, write=False)
        settings = self.ctx.settings
        size = min(chunk_size, settings.registry_max_chunk_size) if chunk_size > 0 else settings.registry_chunk_size
        async for chunk in self.ctx.files.read_chunks(relative, clean_relative_path(path), size):
            yield chunk

    # -- the MLflow artifact proxy's paths ----------------------------------------------

    async def authorize_path(self, principal: str, path: str, write: bool) -> str:
        """Check a proxy path (`<experiment>/...` or `registry/<model>/versions/<n>/...`); returns it cleaned."""
        path = clean_relative_path(path)
        parts = path.split("/")
        privilege = Privilege.MODIFY if write else Privilege.EXECUTE
        async with self.ctx.read() as conn:
            if parts[0].isdigit():
                found = await tracking.experiment_with_chain(conn, principal, experiment_id=int(parts[0]))
                self.ctx.require(principal, found[1] if found else None, privilege, f"experiment {parts[0]}")
                return path
            if parts[0] == "registry" and len(parts) >= 4 and parts[1].isdigit() and parts[3].isdigit():
                name = await model_store.model_name_by_pk(conn, int(parts[1]))
                if name is None:
                    raise NotFound(f"no artifacts at {path!r}")
        if parts[0] == "registry" and len(parts) >= 4:
            await self.location(principal, Target(model_name=name.full, version=int(parts[3])), write)
            return path
        raise NotFound(f"no artifacts at {path!r}")

    # -- sources of model versions ------------------------------------------------------

    async def resolve_source(self, principal: str, source: str, run_id: str = "") -> Path | str | None:
        """Where a version's files are copied from, once the caller may read it: a path inside the
        artifact store (a str, root-relative) or a folder on the registry's host (a Path)."""
        if source.startswith("runs:/"):
            rest = source[len("runs:/") :].strip("/")
            source_run, _, sub = rest.partition("/")
            relative = await self.runs.run_artifact_location(principal, source_run, Privilege.EXECUTE)
            return _join(relative, clean_relative_path(sub))
        if source.startswith("models:/"):
            model_id = source[len("models:/") :].strip("/")
            if not model_id.startswith("m-"):
                raise InvalidArgument(
                    f"source {source!r}: only logged models (models:/m-...) can be copied", field="source"
                )
            model = await self.logged.get(principal, model_id)
            return self.ctx.files.relative(model.artifact_location)
        if source.startswith("mlflow-artifacts:"):
            return await self.authorize_path(principal, source[len("mlflow-artifacts:") :], write=False)
        in_store = self.ctx.files.inside(source) if "://" in source or source.startswith("/") else None
        if in_store is not None:
            # A URI of the store itself (file:// under the root, or s3://bucket/prefix/...).
            return await self.authorize_path(principal, in_store, write=False)
        if source.startswith("file://") or source.startswith("/"):
            path = Path(source[len("file://") :] if source.startswith("file://") else source).resolve()
            settings = self.ctx.settings
            if not settings.registry_allow_local_sources:
                raise InvalidArgument(f"source {source!r}: local paths are not allowed here", field="source")
            allowed_roots = [Path(r).resolve() for r in settings.registry_local_source_roots]
            # Copying a host path in would let anyone read the registry's disk: superusers, or configured roots.
            if not self.ctx.policy.is_superuser(principal) and not any(
                path == r or r in path.parents for r in allowed_roots
            ):
                raise PermissionDenied(
                    f"permission denied: {principal} may not register local path {str(path)!r}"
                    " (superusers only, or under TESSERA_REGISTRY_LOCAL_SOURCE_ROOTS)"
                )
            if not path.exists():
                raise InvalidArgument(f"source {source!r} does not exist", field="source")
            return path
        raise InvalidArgument(
            f"unsupported source {source!r}: use runs:/, models:/m-..., mlflow-artifacts:/, file:// or a local path",
            field="source",
        )


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)
