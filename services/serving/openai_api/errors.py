"""Core errors as OpenAI error objects with the HTTP status a client library expects."""

from __future__ import annotations

import json

import grpc
from aiohttp import web

from services.common.errors import TesseraError, status_of

# gRPC status -> (HTTP status, OpenAI error type).
_HTTP = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request_error"),
    grpc.StatusCode.FAILED_PRECONDITION: (400, "invalid_request_error"),
    grpc.StatusCode.OUT_OF_RANGE: (400, "invalid_request_error"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "authentication_error"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "permission_error"),
    grpc.StatusCode.NOT_FOUND: (404, "not_found_error"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "invalid_request_error"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "rate_limit_error"),
    grpc.StatusCode.CANCELLED: (499, "cancelled"),
    grpc.StatusCode.UNAVAILABLE: (503, "service_unavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "timeout"),
}
# Seconds a client waits before it retries a call refused for capacity (429) or unavailability (503).
RETRY_AFTER_S = 1


def error_body(message: str, error_type: str, code: str | None = None, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def http_error(exc: BaseException, *, model_not_found: bool = False, request_id: str = "") -> web.Response:
    """The response for `exc`; anything that is not a TesseraError is a 500 without details."""
    status, error_type = _HTTP.get(status_of(exc), (500, "internal_error"))
    message = exc.message if isinstance(exc, TesseraError) else "internal error"
    param = (exc.field or None) if isinstance(exc, TesseraError) else None
    code = "model_not_found" if model_not_found and status == 404 else None
    retry_after = getattr(exc, "retry_after_s", RETRY_AFTER_S)
    return json_error(
        status, message, error_type, code=code, param=param, request_id=request_id, retry_after_s=retry_after
    )


def json_error(
    status: int,
    message: str,
    error_type: str,
    *,
    code: str | None = None,
    param: str | None = None,
    request_id: str = "",
    retry_after_s: int = RETRY_AFTER_S,
) -> web.Response:
    headers = {"x-request-id": request_id} if request_id else {}
    if status in (429, 503):
        headers["Retry-After"] = str(retry_after_s)
    return web.Response(
        status=status,
        text=json.dumps(error_body(message, error_type, code, param)),
        content_type="application/json",
        headers=headers,
    )


def stream_error(exc: BaseException) -> dict:
    """The error event sent in place of the next chunk once a stream has started."""
    status, error_type = _HTTP.get(status_of(exc), (500, "internal_error"))
    message = exc.message if isinstance(exc, TesseraError) else "internal error"
    body = error_body(message, error_type)
    body["error"]["status"] = status
    return body
