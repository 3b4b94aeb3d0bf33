"""The services the playground is a client of: serving's OpenAI API over HTTP, the rest over gRPC.

Every call carries the signed-in user's own token, so each service decides what that user may
do; the playground holds no privilege of its own. Their errors become core errors here.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import grpc
from tessera.evaluation.v1 import evaluation_pb2_grpc
from tessera.monitoring.v1 import monitoring_pb2_grpc
from tessera.serving.v1 import serving_pb2_grpc

from services.common import channels, telemetry
from services.common.auth import bearer
from services.common.errors import (
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

# An SSE line longer than this is not one serving sends: the stream is cut.
MAX_SSE_LINE_BYTES = 1024 * 1024
MAX_ERROR_MESSAGE_CHARS = 500

_BY_HTTP_STATUS: dict[int, type[TesseraError]] = {
    400: InvalidArgument,
    401: Unauthenticated,
    403: PermissionDenied,
    404: NotFound,
    413: InvalidArgument,
    429: ResourceExhausted,
    503: Unavailable,
    504: DeadlineExceeded,
}
_BY_GRPC_STATUS: dict[grpc.StatusCode, type[TesseraError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNIMPLEMENTED: Unavailable,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
}


def rpc_error(exc: grpc.aio.AioRpcError, service: str) -> TesseraError:
    """A gRPC failure as a core error, keeping the service's own message (short)."""
    kind = _BY_GRPC_STATUS.get(exc.code(), Unavailable)
    details = (exc.details() or exc.code().name)[:MAX_ERROR_MESSAGE_CHARS]
    if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNIMPLEMENTED):
        details = f"the {service} service is not reachable: {details}"
    return kind(details)


class OpenAIClient:
    """Serving's OpenAI-compatible HTTP API: the models a user may call, streamed chat completions."""

    def __init__(self, base_url: str, generation_timeout_s: float) -> None:
        self._base = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=generation_timeout_s, sock_connect=10)
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(timeout=self._timeout, read_bufsize=2**16)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _headers(self, token: str, request_id: str = "") -> dict[str, str]:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if request_id:
            headers["x-request-id"] = request_id
        wire: list[tuple[str, bytes]] = []
        telemetry.inject_headers(wire)
        headers.update({k: v.decode() for k, v in wire})
        return headers

    async def models(self, token: str) -> list[str]:
        """The endpoints this token may EXECUTE (serving filters `/v1/models` by grant)."""
        try:
            async with self._session.get(f"{self._base}/models", headers=self._headers(token)) as reply:
                if reply.status != 200:
                    raise await _http_error(reply)
                body = await reply.json()
        except aiohttp.ClientError as exc:
            raise Unavailable(f"serving's OpenAI API is not reachable: {type(exc).__name__}") from None
        return sorted(str(m.get("id", "")) for m in body.get("data", []) if isinstance(m, dict) and m.get("id"))

    async def stream_chat(self, token: str, body: dict, request_id: str) -> AsyncIterator[dict]:
        """The chunks of a streamed chat completion; raises a core error when serving refuses the call."""
        try:
            async with self._session.post(
                f"{self._base}/chat/completions", json=body, headers=self._headers(token, request_id)
            ) as reply:
                if reply.status != 200:
                    raise await _http_error(reply)
                while True:
                    line = await reply.content.readline()
                    if not line:
                        return
                    if len(line) > MAX_SSE_LINE_BYTES:
                        raise Unavailable("serving sent an event over the playground's line limit")
                    text = line.decode("utf-8", "replace").strip()
                    if not text.startswith("data:"):
                        continue
                    data = text[5:].strip()
                    if data == "[DONE]":
                        return
                    try:
                        chunk = json.loads(data)
                    except ValueError:
                        continue
                    if isinstance(chunk, dict):
                        yield chunk
        except aiohttp.ClientError as exc:
            raise Unavailable(f"serving's OpenAI API is not reachable: {type(exc).__name__}") from None


async def _http_error(reply: aiohttp.ClientResponse) -> TesseraError:
    message = f"serving answered HTTP {reply.status}"
    try:
        body = await reply.json(content_type=None)
        message = str(body["error"]["message"])[:MAX_ERROR_MESSAGE_CHARS]
    except (ValueError, KeyError, TypeError, aiohttp.ClientError):
        pass
    return _BY_HTTP_STATUS.get(reply.status, Unavailable)(message)


class ServiceStubs:
    """gRPC stubs of serving, monitoring and evaluation, called with the user's token."""

    def __init__(self, serving: str, monitoring: str, evaluation: str, timeout_s: float) -> None:
        self._channels = {name: channels.channel(address) for name, address in
                          (("serving", serving), ("monitoring", monitoring), ("evaluation", evaluation))}  # fmt: skip
        self.serving = serving_pb2_grpc.ServingServiceStub(self._channels["serving"])
        self.monitoring = monitoring_pb2_grpc.MonitoringServiceStub(self._channels["monitoring"])
        self.evaluation = evaluation_pb2_grpc.EvaluationServiceStub(self._channels["evaluation"])
        self.timeout_s = timeout_s

    async def call(self, service: str, method, request, token: str):
        """One unary call as the user; gRPC failures become core errors."""
        try:
            return await method(request, metadata=bearer(token), timeout=self.timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise rpc_error(exc, service) from None

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
