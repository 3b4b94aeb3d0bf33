"""What evaluation asks of the other services, always with a given principal's token:
serving (Generate, the target and the judge), training (datasets) and monitoring (payload logs).

Their errors come back as the core's errors with the peer named, so a refused call reads
`PERMISSION_DENIED: serving: ...` to the client, not a bare UNAVAILABLE.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import grpc
from tessera.events.v1 import serving_pb2 as serving_events
from tessera.monitoring.v1 import monitoring_pb2 as mpb
from tessera.monitoring.v1 import monitoring_pb2_grpc
from tessera.serving.v1 import serving_pb2 as spb
from tessera.serving.v1 import serving_pb2_grpc
from tessera.training.v1 import training_pb2 as tpb
from tessera.training.v1 import training_pb2_grpc

from services.common import channels
from services.common.auth import bearer
from services.common.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    TesseraError,
    Unauthenticated,
    Unavailable,
)
from services.evaluation.entities import Sampling

_CODES: dict[grpc.StatusCode, type[TesseraError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}


def translated(exc: grpc.aio.AioRpcError, peer: str) -> TesseraError:
    kind = _CODES.get(exc.code(), Unavailable)
    return kind(f"{peer}: {exc.code().name}: {(exc.details() or '')[:500]}")


def status_name(exc: BaseException) -> str:
    """The gRPC status name a failed row records."""
    return exc.code_name if isinstance(exc, TesseraError) else "INTERNAL"


class _Peer:
    name = ""

    def __init__(self, address: str) -> None:
        self.address = address
        self._channel: grpc.aio.Channel | None = None

    def channel(self) -> grpc.aio.Channel:
        # Created on first use, inside the running event loop that grpc.aio binds it to.
        if self._channel is None:
            self._channel = channels.channel(self.address)
        return self._channel

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None


@dataclass(frozen=True)
class Answer:
    request_id: str
    text: str
    prompt_tokens: int
    completion_tokens: int
    served_model: str
    model_version: str
    latency_ms: float


def sampling_message(sampling: Sampling, seed: int | None) -> serving_events.SamplingParams:
    out = serving_events.SamplingParams(stop=list(sampling.stop), ignore_eos=sampling.ignore_eos)
    if sampling.temperature is not None:
        out.temperature = sampling.temperature
    if sampling.top_p is not None:
        out.top_p = sampling.top_p
    if sampling.max_tokens is not None:
        out.max_tokens = sampling.max_tokens
    if seed is not None:
        out.seed = seed
    return out


class ServingPeer(_Peer):
    """Serving's gRPC Generate: every call is a fresh generation (serving caches no answers)."""

    name = "serving"

    async def generate(
        self,
        token: str,
        endpoint: str,
        request: str | list[dict],
        sampling: Sampling,
        seed: int | None,
        request_id: str,
        timeout_s: float,
    ) -> Answer:
        message = spb.GenerateRequest(
            endpoint=endpoint, sampling=sampling_message(sampling, seed), request_id=request_id
        )
        if isinstance(request, str):
            message.prompt = request
        else:
            message.chat.messages.extend(
                serving_events.ChatMessage(role=m["role"], content=m["content"]) for m in request
            )
        started = time.perf_counter()
        try:
            reply = await serving_pb2_grpc.ServingServiceStub(self.channel()).Generate(
                message, metadata=bearer(token), timeout=timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            raise translated(exc, f"serving endpoint {endpoint}") from exc
        return Answer(
            request_id=reply.request_id,
            text=reply.text,
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens,
            served_model=reply.served_model,
            model_version=reply.model_version,
            latency_ms=(time.perf_counter() - started) * 1000,
        )


class TrainingPeer(_Peer):
    """Datasets live in the training service; SELECT/MODIFY are checked there, for the caller."""

    name = "training"

    def _stub(self) -> training_pb2_grpc.TrainingServiceStub:
        return training_pb2_grpc.TrainingServiceStub(self.channel())

    async def describe(self, token: str, dataset: str) -> tpb.Dataset:
        try:
            return await self._stub().DescribeDataset(
                tpb.DescribeDatasetRequest(full_name=dataset), metadata=bearer(token), timeout=30
            )
        except grpc.aio.AioRpcError as exc:
            raise translated(exc, f"training: dataset {dataset}") from exc

    async def read(self, token: str, dataset: str, version: str, max_bytes: int) -> bytes:
        data = bytearray()
        try:
            async for chunk in self._stub().ReadDatasetVersion(
                tpb.ReadDatasetVersionRequest(dataset=dataset, version=version), metadata=bearer(token), timeout=300
            ):
                data += chunk.data
                if len(data) > max_bytes:
                    raise InvalidArgument(f"dataset {dataset}@{version} is larger than {max_bytes} bytes")
        except grpc.aio.AioRpcError as exc:
            raise translated(exc, f"training: dataset {dataset}") from exc
        return bytes(data)

    async def create(self, token: str, dataset: str, description: str) -> None:
        try:
            await self._stub().CreateDataset(
                tpb.CreateDatasetRequest(full_name=dataset, description=description), metadata=bearer(token), timeout=30
            )
        except grpc.aio.AioRpcError as exc:
            raise translated(exc, f"training: dataset {dataset}") from exc

    async def upload(self, token: str, dataset: str, data: bytes) -> tpb.DatasetVersion:
        async def requests():
            yield tpb.UploadDatasetVersionRequest(dataset=dataset)
            for start in range(0, len(data), 1 << 20):
                yield tpb.UploadDatasetVersionRequest(data=data[start : start + (1 << 20)])

        try:
            return await self._stub().UploadDatasetVersion(requests(), metadata=bearer(token), timeout=300)
        except grpc.aio.AioRpcError as exc:
            raise translated(exc, f"training: dataset {dataset}") from exc


class MonitoringPeer(_Peer):
    """Payload logs (the inference table) through monitoring's API; SELECT on the endpoint is checked there."""

    name = "monitoring"

    async def records(
        self, token: str, endpoint: str, start: datetime, end: datetime, status: str = "", limit: int = 10_000
    ) -> AsyncIterator:
        stub = monitoring_pb2_grpc.MonitoringServiceStub(self.channel())
        request = mpb.ListInferenceRecordsRequest(endpoint=endpoint, status=status)
        request.start_time.FromDatetime(start)
        request.end_time.FromDatetime(end)
        page_token, seen = "", 0
        while True:
            request.page.page_token = page_token
            request.page.page_size = 1000
            try:
                reply = await stub.ListInferenceRecords(request, metadata=bearer(token), timeout=60)
            except grpc.aio.AioRpcError as exc:
                raise translated(exc, f"monitoring: endpoint {endpoint}") from exc
            for record in reply.records:
                yield record
                seen += 1
                if seen >= limit:
                    return
            page_token = reply.page.next_page_token
            if not page_token:
                return
