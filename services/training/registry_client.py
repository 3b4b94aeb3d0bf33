"""What the training service asks of the registry: base model files, runs, metrics, artifacts, versions, lineage.

Two identities: the service token (a registry service principal: reads model
versions and their files, records lineage) and the run-as token (the principal
jobs run as: it creates the run and registers the trained version).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
from tessera.registry.v1 import registry_pb2 as rpb
from tessera.registry.v1 import registry_pb2_grpc

from services.common.auth import bearer
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, Unavailable

_log = logging.getLogger(__name__)
_CHUNK = 1 << 20
# Files pre-flight needs from a base model (not its weights).
TOKENIZER_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "tokenizer.model",
)


def _error(exc: grpc.aio.AioRpcError, what: str) -> Exception:
    code = exc.code()
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(f"{what}: {exc.details()}")
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDenied(f"{what}: {exc.details()}")
    if code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION):
        return InvalidArgument(f"{what}: {exc.details()}")
    return Unavailable(f"the registry did not answer ({what}): {code.name}")


class TrainingRegistry:
    def __init__(self, address: str, service_token: str, run_as_token: str) -> None:
        self.address = address
        self._service = bearer(service_token)
        self._run_as = bearer(run_as_token)
        self._stub: registry_pb2_grpc.RegistryServiceStub | None = None
        self._channel: grpc.aio.Channel | None = None

    def stub(self) -> registry_pb2_grpc.RegistryServiceStub:
        if self._stub is None:
            self._channel = grpc.aio.insecure_channel(
                self.address,
                options=[("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)],
            )
            self._stub = registry_pb2_grpc.RegistryServiceStub(self._channel)
        return self._stub

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel, self._stub = None, None

    async def _call(self, method: str, request, what: str, *, run_as: bool = False, timeout: float = 30.0):
        try:
            return await getattr(self.stub(), method)(
                request, metadata=self._run_as if run_as else self._service, timeout=timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise _error(exc, what) from exc

    # -- base models ------------------------------------------------------------

    async def resolve_version(self, model: str, version: int, alias: str) -> rpb.ModelVersion:
        if alias:
            request = rpb.GetModelVersionByAliasRequest(model_name=model, alias=alias)
            found = await self._call("GetModelVersionByAlias", request, f"model {model}@{alias}")
        else:
            request = rpb.GetModelVersionRequest(model_name=model, version=version)
            found = await self._call("GetModelVersion", request, f"model {model} version {version}")
        if found.status != rpb.MODEL_VERSION_STATUS_READY:
            raise FailedPrecondition(f"model {model} version {found.version} is not READY")
        return found

    async def download_version(self, model: str, version: int, dest: Path, *, only: tuple[str, ...] = ()) -> Path:
        """The version's files under `dest` (all of them, or the names in `only`); cached by completeness marker."""
        marker = dest / (".complete-small" if only else ".complete")
        if marker.exists() or (dest / ".complete").exists():
            return dest
        target = rpb.ArtifactTarget(model_version=rpb.ModelVersionRef(model_name=model, version=version))
        listing = await self._call(
            "ListArtifacts", rpb.ListArtifactsRequest(target=target), f"files of {model}/{version}"
        )
        staging = dest.with_name(dest.name + f".part-{time.monotonic_ns()}")
        staging.mkdir(parents=True, exist_ok=True)
        for info in listing.files:
            if info.is_dir or (only and info.path not in only):
                continue
            await self._download(target, info.path, staging / info.path, f"{model}/{version}")
        (staging / marker.name).write_text("")
        if dest.exists():
            import shutil

            shutil.rmtree(dest, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(dest)
        return dest

    async def _download(self, target, path: str, out: Path, what: str, *, run_as: bool = False) -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            with out.open("wb") as f:
                call = self.stub().DownloadArtifacts(
                    rpb.DownloadArtifactsRequest(target=target, path=path),
                    metadata=self._run_as if run_as else self._service,
                    timeout=600,
                )
                async for chunk in call:
                    f.seek(chunk.offset)
                    f.write(chunk.data)
        except grpc.aio.AioRpcError as exc:
            raise _error(exc, f"download {what}/{path}") from exc

    # -- runs (as the run-as principal) -------------------------------------------

    async def experiment_id(self, name: str, schema: str, owner: str) -> str:
        """The experiment's id; a new one is handed to `owner` (the job's submitter)."""
        try:
            found = await self.stub().GetExperiment(
                rpb.GetExperimentRequest(name=name), metadata=self._run_as, timeout=30
            )
            return found.experiment_id
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise _error(exc, f"experiment {name}") from exc
        try:
            created = await self.stub().CreateExperiment(
                rpb.CreateExperimentRequest(name=name, schema_full_name=schema), metadata=self._run_as, timeout=30
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.ALREADY_EXISTS:
                return await self.experiment_id(name, schema, owner)
            raise _error(exc, f"experiment {name}") from exc
        await self.hand_over(rpb.SECURABLE_TYPE_EXPERIMENT, created.experiment_id, owner)
        return created.experiment_id

    async def create_run(self, experiment_id: str, name: str, user: str, tags: dict[str, str]) -> str:
        request = rpb.CreateRunRequest(
            experiment_id=experiment_id,
            run_name=name,
            start_time_ms=int(time.time() * 1000),
            user_id=user,
            tags=[rpb.RunTag(key=k, value=v) for k, v in tags.items()],
        )
        return (await self._call("CreateRun", request, "create run", run_as=True)).info.run_id

    async def log(self, run_id: str, *, params: dict[str, str] | None = None, metrics=()) -> None:
        """metrics: (key, value, step, timestamp_ms) tuples."""
        params = params or {}
        items = list(metrics)
        for start in range(0, max(1, len(items)), 1000):
            request = rpb.LogBatchRequest(
                run_id=run_id,
                params=[rpb.Param(key=k, value=str(v)[:6000]) for k, v in params.items()] if start == 0 else [],
                metrics=[
                    rpb.Metric(key=k, value=v, step=s, timestamp_ms=t) for k, v, s, t in items[start : start + 1000]
                ],
            )
            await self._call("LogBatch", request, "log to run", run_as=True)

    async def finish_run(self, run_id: str, status: int) -> None:
        request = rpb.UpdateRunRequest(run_id=run_id, status=status, end_time_ms=int(time.time() * 1000))
        await self._call("UpdateRun", request, "finish run", run_as=True)

    async def upload(self, target: rpb.ArtifactTarget, folder: Path, prefix: str = "") -> None:
        files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))

        async def requests() -> AsyncIterator[rpb.UploadArtifactsRequest]:
            yield rpb.UploadArtifactsRequest(target=target)
            for path in files:
                rel = (prefix + path.relative_to(folder).as_posix()) if prefix else path.relative_to(folder).as_posix()
                size = path.stat().st_size
                with path.open("rb") as f:
                    offset = 0
                    while True:
                        data = f.read(_CHUNK)
                        yield rpb.UploadArtifactsRequest(
                            chunk=rpb.ArtifactChunk(path=rel, data=data, offset=offset, file_size=size)
                        )
                        offset += len(data)
                        if offset >= size:
                            break

        try:
            await self.stub().UploadArtifacts(requests(), metadata=self._run_as, timeout=1800)
        except grpc.aio.AioRpcError as exc:
            raise _error(exc, "upload artifacts") from exc

    async def download_run_file(self, run_id: str, path: str, out: Path) -> Path:
        await self._download(rpb.ArtifactTarget(run_id=run_id), path, out, f"run {run_id}", run_as=True)
        return out

    # -- the trained version ------------------------------------------------------

    async def hand_over(self, kind: int, name: str, owner: str) -> None:
        """What the run-as principal created for a job belongs to the job's submitter."""
        request = rpb.SetOwnerRequest(securable_type=kind, securable_full_name=name, new_owner=owner)
        await self._call("SetOwner", request, f"owner of {name}", run_as=True)

    async def register(self, model: str, run_id: str, folder: Path, description: str, owner: str) -> int:
        try:
            await self.stub().CreateRegisteredModel(
                rpb.CreateRegisteredModelRequest(full_name=model, description="fine-tuned by Tessera training"),
                metadata=self._run_as,
                timeout=30,
            )
            created_model = True
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise _error(exc, f"create model {model}") from exc
            created_model = False
        # The files go to the run first (as MLflow's log_model does); the registry copies them into the version.
        await self.upload(rpb.ArtifactTarget(run_id=run_id), folder, prefix="model/")
        created = await self._call(
            "CreateModelVersion",
            rpb.CreateModelVersionRequest(
                model_name=model, source=f"runs:/{run_id}/model", run_id=run_id, description=description
            ),
            f"create a version of {model}",
            run_as=True,
        )
        request = rpb.GetModelVersionRequest(model_name=model, version=created.version)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            found = await self._call("GetModelVersion", request, f"{model}/{created.version}", run_as=True)
            if found.status == rpb.MODEL_VERSION_STATUS_READY:
                if created_model:
                    await self.hand_over(rpb.SECURABLE_TYPE_REGISTERED_MODEL, model, owner)
                return created.version
            if found.status == rpb.MODEL_VERSION_STATUS_FAILED_REGISTRATION:
                raise FailedPrecondition(f"{model}/{created.version} failed registration: {found.status_message}")
            await asyncio.sleep(0.5)
        raise Unavailable(f"{model}/{created.version} did not become READY in 600 s")

    async def set_alias(self, model: str, alias: str, version: int) -> None:
        request = rpb.SetModelAliasRequest(model_name=model, alias=alias, version=version)
        await self._call("SetModelAlias", request, f"alias {model}@{alias}", run_as=True)

    async def link(
        self, source: tuple[str, str], target: tuple[str, str], properties: dict[str, str] | None = None
    ) -> None:
        request = rpb.CreateLineageEdgeRequest(
            source=rpb.LineageNode(type=source[0], name=source[1]),
            target=rpb.LineageNode(type=target[0], name=target[1]),
            properties=properties or {},
        )
        try:
            await self._call("CreateLineageEdge", request, "lineage")
        except InvalidArgument:
            _log.warning("lineage %s -> %s refused", source, target)
