"""The MLflow REST server: aiohttp on the registry's event loop, beside the gRPC server.

aiohttp because it runs in the same asyncio loop as grpc.aio with no extra
server process or thread, streams request and response bodies (artifacts of
any size), and is one small dependency. Every request authenticates with the
same bearer tokens as gRPC (`MLFLOW_TRACKING_TOKEN`, or basic auth whose
password is a token), and core errors come back as MLflow's
`{"error_code", "message"}` with MLflow's codes and HTTP statuses. A request
continues its caller's trace (`traceparent` header) in a SERVER span, and the
server speaks HTTPS when TESSERA_TLS_CERT_FILE/KEY_FILE are set.
"""

from __future__ import annotations

import base64
import json
import logging

from aiohttp import web
from opentelemetry import trace

from services.common import telemetry
from services.common.auth import TokenAuthenticator
from services.common.channels import ssl_context
from services.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    TesseraError,
    Unauthenticated,
)
from services.registry.core import Registry
from services.registry.mlflow_rest import artifact_routes, registry_routes, tracking_routes
from services.registry.mlflow_rest.json_convert import Names
from services.registry.mlflow_rest.request_body import PRINCIPAL

_log = logging.getLogger(__name__)

_ERRORS: list[tuple[type[TesseraError], str, int]] = [
    (InvalidArgument, "INVALID_PARAMETER_VALUE", 400),
    (NotFound, "RESOURCE_DOES_NOT_EXIST", 404),
    (AlreadyExists, "RESOURCE_ALREADY_EXISTS", 400),
    (FailedPrecondition, "INVALID_STATE", 400),
    (PermissionDenied, "PERMISSION_DENIED", 403),
    (Unauthenticated, "UNAUTHENTICATED", 401),
    (ResourceExhausted, "RESOURCE_EXHAUSTED", 429),
]


def error_response(code: str, message: str, status: int) -> web.Response:
    return web.json_response({"error_code": code, "message": message}, status=status)


def _credentials(request: web.Request) -> list[tuple[str, str]]:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "basic":
        # MLFLOW_TRACKING_USERNAME/PASSWORD: the password is the token.
        try:
            _, _, password = base64.b64decode(value).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            password = ""
        header = f"Bearer {password}"
    return [("authorization", header)] if header else []


class MlflowRestServer:
    def __init__(self, registry: Registry, authenticator: TokenAuthenticator) -> None:
        self.registry = registry
        self.auth = authenticator
        self.names = Names(registry.settings.registry_default_catalog, registry.settings.registry_default_schema)
        self._runner: web.AppRunner | None = None
        self._tracer = trace.get_tracer("tessera.http")
        self.app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        tracking_routes.add_routes(self.app, registry)
        registry_routes.add_routes(self.app, registry, self.names)
        artifact_routes.add_routes(self.app, registry)
        self.app.router.add_get("/health", _health)
        self.app.router.add_get("/version", _version)

    @web.middleware
    async def _middleware(self, request: web.Request, handler):
        with self._tracer.start_as_current_span(
            f"{request.method} {request.path}",
            telemetry.context_from_headers(request.headers),
            trace.SpanKind.SERVER,
            attributes={"http.request.method": request.method, "url.path": request.path},
        ) as span:
            response = await self._handle(request, handler)
            if span.is_recording():
                span.set_attribute("http.response.status_code", response.status)
                if response.status >= 500:
                    span.set_status(trace.Status(trace.StatusCode.ERROR))
            return response

    async def _handle(self, request: web.Request, handler):
        try:
            if request.path not in ("/health", "/version"):
                request[PRINCIPAL] = self.auth.authenticate(_credentials(request)).name
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status == 404:
                return error_response("ENDPOINT_NOT_FOUND", f"no endpoint {request.method} {request.path}", 404)
            if exc.status == 405:
                return error_response("ENDPOINT_NOT_FOUND", f"{request.method} not allowed on {request.path}", 405)
            raise
        except TesseraError as exc:
            if isinstance(exc, Unauthenticated):
                return error_response(
                    "UNAUTHENTICATED",
                    f"{exc.message} (HTTP: header 'Authorization: Bearer <token>', e.g. MLFLOW_TRACKING_TOKEN)",
                    401,
                )
            for kind, code, status in _ERRORS:
                if isinstance(exc, kind):
                    message = exc.message if not exc.field else f"{exc.field}: {exc.message}"
                    return error_response(code, message, status)
            _log.warning("%s %s: %s", request.method, request.path, exc.message)
            return error_response("INTERNAL_ERROR", exc.message, 500)
        except json.JSONDecodeError as exc:
            return error_response("MALFORMED_REQUEST", f"request body is not valid JSON: {exc}", 400)
        except Exception:  # noqa: BLE001 - never a stack trace to the client
            _log.exception("%s %s failed", request.method, request.path)
            return error_response("INTERNAL_ERROR", "internal error; see the service log", 500)

    async def start(self, host: str, port: int) -> int:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        tls = ssl_context(self.registry.settings)
        site = web.TCPSite(self._runner, host, port, reuse_address=True, ssl_context=tls)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]
        _log.info("MLflow REST API on %s://%s:%d", "https" if tls else "http", host, bound)
        return bound

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def _health(_: web.Request) -> web.Response:
    return web.Response(text="OK")


async def _version(_: web.Request) -> web.Response:
    return web.Response(text="tessera")
