"""The model catalog over the registry's gRPC API, with a local cache of version files.

Serving calls the registry with its own token (TESSERA_SERVICE_TOKEN); privilege
checks ask about the caller by name (CheckPrivilege on behalf of a principal).
"""

from __future__ import annotations

import asyncio
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
        self._fetch_locks: dict[tuple[str, int], asyncio.Lock] = {}

    async def close(self) -> None:
        await self._channel.close()

    async def resolve(self, model_name: str, version: int | None, alias: str | None) -> int:
        try:
            if alias:
                found = await self._stub.GetModelVersionByAlias(
                    pb.GetModelVersionByAliasRequest(model_name=model_name, alias=alias),
                    metadata=self._metadata,
                    timeout=self._timeout,
                )
            else:
                found = await self._stub.GetModelVersion(
                    pb.GetModelVersionRequest(model_name=model_name, version=version or 0),
                    metadata=self._metadata,
                    timeout=self._timeout,
                )
        except grpc.aio.AioRpcError as exc:
            raise _translated(exc, f"{model_name} {'@' + alias if alias else f'v{version}'}") from exc
        if found.status != pb.MODEL_VERSION_STATUS_READY:
            raise FailedPrecondition(
                f"{model_name} v{found.version} is {pb.ModelVersionStatus.Name(found.status)}, not READY"
            )
        return found.version

    async def fetch(self, model_name: str, version: int) -> Path:
        target = self._cache / model_name / str(version)
        if (target / _COMPLETE).is_file():
            return target
        lock = self._fetch_locks.setdefault((model_name, version), asyncio.Lock())
        async with lock:
            if not (target / _COMPLETE).is_file():
                await self._download(model_name, version, target)
        return target

    async def _download(self, model_name: str, version: int, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        # Download beside the target and move it in whole, so a reader never sees half a model.
        staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=target.parent))
        request = pb.DownloadArtifactsRequest(
            target=pb.ArtifactTarget(model_version=pb.ModelVersionRef(model_name=model_name, version=version))
        )
        handle = None
        current = ""
        files = 0
        try:
            try:
                async for chunk in self._stub.DownloadArtifacts(request, metadata=self._metadata, timeout=600):
                    if chunk.path != current or handle is None:
                        if handle is not None:
                            handle.close()
                        current = chunk.path
                        handle = open(_safe_join(staging, chunk.path), "r+b" if chunk.offset else "wb")  # noqa: SIM115, ASYNC230 - one open per file, writes are chunk-sized
                        files += 1
                    handle.seek(chunk.offset)
                    handle.write(chunk.data)
            except grpc.aio.AioRpcError as exc:
                raise _translated(exc, f"download {model_name} v{version}") from exc
            finally:
                if handle is not None:
                    handle.close()
            if files == 0:
                raise FailedPrecondition(f"{model_name} v{version} has no files in the registry")
            (staging / _COMPLETE).touch()
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
            _log.info("fetched %s v%d (%d files) into %s", model_name, version, files, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    async def check_execute(self, principal: str, model_name: str) -> None:
        try:
            answer = await self._stub.CheckPrivilege(
                pb.CheckPrivilegeRequest(
                    principal=principal,
                    securable_type=pb.SECURABLE_TYPE_REGISTERED_MODEL,
                    securable_full_name=model_name,
                    privilege=pb.PRIVILEGE_EXECUTE,
                ),
                metadata=self._metadata,
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            raise _translated(exc, f"check EXECUTE on {model_name}") from exc
        if not answer.allowed:
            raise PermissionDenied(f"{principal} may not use {model_name}: EXECUTE is needed ({answer.reason})")

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


def _safe_join(root: Path, relative: str) -> Path:
    parts = PurePosixPath(relative).parts
    if not parts or relative.startswith("/") or ".." in parts:
        raise InvalidArgument(f"registry sent an unsafe artifact path {relative!r}")
    path = root.joinpath(*parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
