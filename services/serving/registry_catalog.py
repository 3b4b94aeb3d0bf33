"""The model catalog over the registry's gRPC API, with a local cache of version files.

Serving calls the registry with its own token (TESSERA_SERVICE_TOKEN). Only
READY versions are served, and the cache is keyed by a content id (storage
location, version and creation time), never by the model's name: a model
re-created under the same name never serves the old files.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import tempfile
from pathlib import Path, PurePosixPath

import grpc
from tessera.registry.v1 import registry_pb2 as pb
from tessera.registry.v1 import registry_pb2_grpc

from services.common import channels
from services.common.auth import bearer
from services.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    TesseraError,
    Unavailable,
)
from services.serving.entities import BASE_MODEL_TAG, ResolvedVersion

_log = logging.getLogger(__name__)

_COMPLETE = ".complete"
_CODES: dict[grpc.StatusCode, type[TesseraError]] = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
}


def _translated(exc: grpc.aio.AioRpcError, what: str) -> TesseraError:
    kind = _CODES.get(exc.code(), Unavailable)
    return kind(f"registry: {what}: {exc.details() or exc.code().name}")


class RegistryCatalog:
    def __init__(self, address: str, service_token: str, cache_dir: Path, *, timeout_s: float = 30.0) -> None:
        self._channel = channels.channel(address, options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)])
        self._stub = registry_pb2_grpc.RegistryServiceStub(self._channel)
        self._metadata = bearer(service_token)
        self._cache = Path(cache_dir)
        self._timeout = timeout_s
        self._fetch_locks: dict[str, asyncio.Lock] = {}

    async def close(self) -> None:
        await self._channel.close()

    async def resolve(self, model_name: str, version: int | None, alias: str | None) -> ResolvedVersion:
        found = await self._version(model_name, version, alias)
        if found.status != pb.MODEL_VERSION_STATUS_READY:
            raise FailedPrecondition(
                f"{model_name} v{found.version} is {pb.ModelVersionStatus.Name(found.status)}, not READY"
            )
        base_model, base_version = _base_of(found)
        return ResolvedVersion(
            found.model_name or model_name, found.version, _content_id(found), base_model, base_version
        )

    async def _version(self, model_name: str, version: int | None, alias: str | None) -> pb.ModelVersion:
        try:
            if alias:
                return await self._stub.GetModelVersionByAlias(
                    pb.GetModelVersionByAliasRequest(model_name=model_name, alias=alias),
                    metadata=self._metadata,
                    timeout=self._timeout,
                )
            return await self._stub.GetModelVersion(
                pb.GetModelVersionRequest(model_name=model_name, version=version or 0),
                metadata=self._metadata,
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            raise _translated(exc, f"{model_name} {'@' + alias if alias else f'v{version}'}") from exc

    async def fetch(self, version: ResolvedVersion) -> Path:
        target = self._cache / version.content_id
        if (target / _COMPLETE).is_file():
            return target
        lock = self._fetch_locks.setdefault(version.content_id, asyncio.Lock())
        async with lock:
            if not (target / _COMPLETE).is_file():
                await self._download(version, target)
        return target

    async def _download(self, version: ResolvedVersion, target: Path) -> None:
        model_name, number = version.model_name, version.version
        self._cache.mkdir(parents=True, exist_ok=True)
        # Download beside the target and move it in whole, so a reader never sees half a model.
        staging = Path(tempfile.mkdtemp(prefix=f".{version.content_id}-", dir=self._cache))
        request = pb.DownloadArtifactsRequest(
            target=pb.ArtifactTarget(model_version=pb.ModelVersionRef(model_name=model_name, version=number))
        )
        handle = None
        current = ""
        sizes: dict[str, int] = {}
        try:
            try:
                async for chunk in self._stub.DownloadArtifacts(request, metadata=self._metadata, timeout=600):
                    if chunk.path != current or handle is None:
                        if handle is not None:
                            handle.close()
                        current = chunk.path
                        handle = open(_safe_join(staging, chunk.path), "r+b" if chunk.offset else "wb")  # noqa: SIM115, ASYNC230 - one open per file, writes are chunk-sized
                        sizes[current] = chunk.file_size
                    handle.seek(chunk.offset)
                    handle.write(chunk.data)
            except grpc.aio.AioRpcError as exc:
                raise _translated(exc, f"download {model_name} v{number}") from exc
            finally:
                if handle is not None:
                    handle.close()
            if not sizes:
                raise FailedPrecondition(f"{model_name} v{number} has no files in the registry")
            for path, size in sizes.items():
                if size and (staging / path).stat().st_size != size:
                    raise FailedPrecondition(f"{model_name} v{number}: {path} arrived incomplete; not cached")
            # The version must still be the READY one we meant: a change during the download is not cached.
            now = await self.resolve(model_name, number, None)
            if now.content_id != version.content_id:
                raise FailedPrecondition(f"{model_name} v{number} changed while it was downloaded; not cached")
            (staging / _COMPLETE).touch()
            try:
                staging.rename(target)
            except OSError:
                # Another replica sharing the cache moved in the same content first; a half folder is replaced.
                if not (target / _COMPLETE).is_file():
                    shutil.rmtree(target, ignore_errors=True)
                    staging.rename(target)
            _log.info("fetched %s v%d (%d files) into %s", model_name, number, len(sizes), target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    async def record_lineage(self, model_name: str, version: int, endpoint: str) -> None:
        try:
            await self._stub.CreateLineageEdge(
                pb.CreateLineageEdgeRequest(
                    source=pb.LineageNode(type="MODEL_VERSION", name=f"{model_name}/{version}"),
                    target=pb.LineageNode(type="SERVING_ENDPOINT", name=endpoint),
                    properties={"service": "serving"},
                ),
                metadata=self._metadata,
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            raise _translated(exc, f"lineage {model_name}/{version} -> {endpoint}") from exc


def _base_of(found: pb.ModelVersion) -> tuple[str, int]:
    """A LoRA adapter's base version from its `tessera.base_model` tag (`catalog.schema.model/N`)."""
    tag = found.tags.get(BASE_MODEL_TAG, "").strip()
    if not tag:
        return "", 0
    name, _, number = tag.rpartition("/")
    if not name or not number.isdigit() or int(number) < 1:
        raise FailedPrecondition(
            f"{found.model_name} v{found.version}: tag {BASE_MODEL_TAG} must be `catalog.schema.model/N`"
            " (a pinned base version: an adapter is trained on one version's weights)"
        )
    return name, int(number)


def _content_id(found: pb.ModelVersion) -> str:
    """Where the files live, which version and when it was created: unique for the version's whole life."""
    identity = "|".join((found.model_name, str(found.version), found.storage_location, found.created_at.ToJsonString()))
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


def _safe_join(root: Path, relative: str) -> Path:
    parts = PurePosixPath(relative).parts
    if not parts or relative.startswith("/") or ".." in parts:
        raise InvalidArgument(f"registry sent an unsafe artifact path {relative!r}")
    path = root.joinpath(*parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
