"""The gRPC server every Tessera service runs (grpc.aio).

`TesseraServer` adds, beside the service's own servicers:
- `grpc.health.v1.Health` (SERVING per registered service once started) and
  server reflection, so `grpcurl` and `grpc_health_probe` work;
- one interceptor pipeline per call: authentication (bearer token or signed
  JWT -> principal), an OpenTelemetry span continuing the caller's trace
  (`traceparent` metadata), Prometheus metrics, and mapping of core exceptions
  (`services.common.errors`) to status codes with a clear message, never a
  stack trace;
- health that follows the process's `Readiness`: NOT_SERVING while a
  background worker (a Kafka consumer) is down;
- graceful stop: health goes NOT_SERVING, in-flight calls get `grace` seconds.

TLS when TESSERA_TLS_CERT_FILE and TESSERA_TLS_KEY_FILE are set.
A server refuses to start on a non-loopback host while a default token is
configured (`CommonSettings.check_listen_safety`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import Counter, Histogram

from services.common import telemetry
from services.common.auth import TokenAuthenticator, reset_principal, set_principal
from services.common.channels import server_credentials
from services.common.config import CommonSettings
from services.common.errors import TesseraError
from services.common.lifecycle import READINESS, Readiness

_log = logging.getLogger(__name__)
# Longest status message sent to a caller (gRPC trailers are capped at 8 KiB).
MAX_STATUS_MESSAGE = 1024

REQUESTS = Counter("tessera_grpc_requests_total", "gRPC calls handled", ["service", "method", "code"])
ERRORS = Counter("tessera_grpc_errors_total", "gRPC calls that ended in an error status", ["service", "method", "code"])
LATENCY = Histogram(
    "tessera_grpc_request_duration_seconds",
    "gRPC call duration",
    ["service", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class RpcPipeline(grpc.aio.ServerInterceptor):
    """Auth, tracing, metrics and error mapping around every handler.

    `TesseraServer` wraps handlers once, as servicers register (`wrap`), rather
    than as an interceptor: grpc.aio's interceptor path costs about 150 µs of
    CPU per call (measured with loadtests/retrieval_bench/floor.py), ten times
    the pipeline's own work. It still works as an interceptor for other servers.
    """

    def __init__(self, service_label: str, authenticator: TokenAuthenticator) -> None:
        self._service = service_label
        self._auth = authenticator
        self._tracer = trace.get_tracer("tessera.grpc")
        self._children: dict[tuple[str, grpc.StatusCode], tuple] = {}
        # method -> (the servicer's handler, its wrapped twin): wrapping once, not on every call.
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return handler
        method = details.method
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self._wrap(handler, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """`handler` (of `method`, "/package.Service/Method") inside the pipeline."""
        return self._wrap(handler, method)

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        public = self._auth.is_public(method)
        if handler.unary_unary:
            return handler._replace(unary_unary=self._wrap_unary(handler.unary_unary, method, public))
        if handler.stream_unary:
            return handler._replace(stream_unary=self._wrap_unary(handler.stream_unary, method, public))
        if handler.unary_stream:
            return handler._replace(unary_stream=self._wrap_stream(handler.unary_stream, method, public))
        return handler._replace(stream_stream=self._wrap_stream(handler.stream_stream, method, public))

    def _begin(self, metadata: Any, public: bool):
        principal = None if public else self._auth.authenticate(metadata)
        return set_principal(principal) if principal else None

    @staticmethod
    def _status_of(exc: BaseException, method: str) -> tuple[grpc.StatusCode, str]:
        """The status and message a caller gets for an exception out of a handler."""
        if isinstance(exc, TesseraError):
            code = exc.code
            message = exc.message if not exc.field else f"{exc.field}: {exc.message}"
            if len(message) > MAX_STATUS_MESSAGE:
                # Messages travel in trailers (8 KiB per call); a message quoting a huge
                # client value must not turn a clear refusal into a transport error.
                message = message[: MAX_STATUS_MESSAGE - 1] + "…"
        elif isinstance(exc, NotImplementedError):
            # Generated servicer stubs raise it for RPCs a service does not offer.
            code = grpc.StatusCode.UNIMPLEMENTED
            message = f"{method} is not implemented by this service"
        else:
            code = grpc.StatusCode.INTERNAL
            message = "internal error; see the service log"
            _log.exception("%s failed", method)
        return code, message

    def _finish(self, method: str, code: grpc.StatusCode, started: float, span: trace.Span) -> None:
        requests, latency, errors = self._metrics(method, code)
        requests.inc()
        latency.observe(time.perf_counter() - started)
        if errors is not None:
            errors.inc()
            span.set_status(Status(StatusCode.ERROR, code.name))
        if span.is_recording():
            span.set_attribute("rpc.grpc.status_code", code.value[0])

    def _metrics(self, method: str, code: grpc.StatusCode):
        """The labelled metric children for a method and status, looked up once (labels() takes a lock)."""
        key = (method, code)
        children = self._children.get(key)
        if children is None:
            name = method.rsplit("/", 1)[-1]
            errors = ERRORS.labels(self._service, name, code.name) if code != grpc.StatusCode.OK else None
            children = (REQUESTS.labels(self._service, name, code.name), LATENCY.labels(self._service, name), errors)
            self._children[key] = children
        return children

    def _wrap_unary(self, behavior: Callable[..., Awaitable[Any]], method: str, public: bool):
        span_name = method.lstrip("/")

        async def call(request_or_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
            # Plain locals, one metadata read: this runs on every call.
            code, started, metadata = grpc.StatusCode.OK, time.perf_counter(), context.invocation_metadata()
            with self._tracer.start_as_current_span(
                span_name, telemetry.context_from_metadata(metadata), SpanKind.SERVER
            ) as span:
                token = None
                try:
                    token = self._begin(metadata, public)
                    return await behavior(request_or_iterator, context)
                except grpc.aio.AbortError:
                    code = context.code() or grpc.StatusCode.UNKNOWN
                    raise
                except Exception as exc:  # noqa: BLE001 - mapped to a status, never leaked
                    code, message = self._status_of(exc, method)
                    await context.abort(code, message)
                finally:
                    if token is not None:
                        reset_principal(token)
                    self._finish(method, code, started, span)

        return call

    def _wrap_stream(self, behavior: Callable[..., Any], method: str, public: bool):
        span_name = method.lstrip("/")

        async def call(request_or_iterator: Any, context: grpc.aio.ServicerContext):
            # Plain locals, one metadata read: this runs on every call.
            code, started, metadata = grpc.StatusCode.OK, time.perf_counter(), context.invocation_metadata()
            with self._tracer.start_as_current_span(
                span_name, telemetry.context_from_metadata(metadata), SpanKind.SERVER
            ) as span:
                token = None
                try:
                    token = self._begin(metadata, public)
                    result = behavior(request_or_iterator, context)
                    if inspect.isasyncgen(result):
                        async for response in result:
                            yield response
                    else:
                        await result
                except grpc.aio.AbortError:
                    code = context.code() or grpc.StatusCode.UNKNOWN
                    raise
                except Exception as exc:  # noqa: BLE001
                    code, message = self._status_of(exc, method)
                    await context.abort(code, message)
                finally:
                    if token is not None:
                        reset_principal(token)
                    self._finish(method, code, started, span)

        return call


class _WrappedGenericHandler(grpc.GenericRpcHandler):
    """A servicer's generic handler whose method handlers come out wrapped in the pipeline (once per method)."""

    def __init__(self, inner: grpc.GenericRpcHandler, pipeline: RpcPipeline) -> None:
        self._inner = inner
        self._pipeline = pipeline
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = self._pipeline.wrap(handler, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped


class _PipelineRegistrar:
    """Stands in for the grpc.aio server while servicers register, so every handler reaches it wrapped."""

    def __init__(self, server: grpc.aio.Server, pipeline: RpcPipeline) -> None:
        self._server = server
        self._pipeline = pipeline

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self._server.add_generic_rpc_handlers(tuple(_WrappedGenericHandler(h, self._pipeline) for h in handlers))

    def add_registered_method_handlers(self, service_name: str, method_handlers: dict) -> None:
        self._server.add_registered_method_handlers(
            service_name,
            {name: self._pipeline.wrap(h, f"/{service_name}/{name}") for name, h in method_handlers.items()},
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)


class TesseraServer:
    """A grpc.aio server with health, reflection and the interceptor pipeline."""

    def __init__(
        self,
        settings: CommonSettings,
        *,
        authenticator: TokenAuthenticator | None = None,
        extra_interceptors: list[grpc.aio.ServerInterceptor] | None = None,
        readiness: Readiness = READINESS,
    ) -> None:
        settings.check_listen_safety()
        self.settings = settings
        self.authenticator = authenticator or TokenAuthenticator.from_settings(settings)
        self._server = grpc.aio.server(
            interceptors=extra_interceptors or None,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
            ],
        )
        self._registrar = _PipelineRegistrar(self._server, RpcPipeline(settings.service_name, self.authenticator))
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._registrar)
        self._service_names: list[str] = []
        self._readiness = readiness
        self._unsubscribe: Callable[[], None] | None = None
        self._serving = False
        self._health_updates: set[asyncio.Task] = set()
        self.port: int = 0

    def add(self, add_to_server: Callable[[Any, grpc.aio.Server], None], servicer: Any, service_name: str) -> None:
        """Register a servicer: `server.add(pb2_grpc.add_FooServicer_to_server, FooServicer(core), 'pkg.Foo')`."""
        add_to_server(servicer, self._registrar)
        self._service_names.append(service_name)

    async def start(self) -> int:
        # The aio servicer named outright: `enable_server_reflection` picks it only for a grpc.aio.Server.
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            reflection.aio.ReflectionServicer([*self._service_names, health.SERVICE_NAME, reflection.SERVICE_NAME]),
            self._registrar,
        )
        address = f"{self.settings.host}:{self.settings.grpc_port}"
        credentials = server_credentials(self.settings)
        if credentials is None:
            self.port = self._server.add_insecure_port(address)
        else:
            self.port = self._server.add_secure_port(address, credentials)
        if self.port == 0:
            raise RuntimeError(f"cannot listen on {self.settings.host}:{self.settings.grpc_port}")
        await self._server.start()
        self._serving = True
        loop = asyncio.get_running_loop()
        # Readiness may change on any loop; health is set on this server's own.
        self._unsubscribe = self._readiness.subscribe(lambda _ready: loop.call_soon_threadsafe(self._schedule_health))
        await self._publish_health()
        _log.info("%s: gRPC on %s:%d", self.settings.service_name, self.settings.host, self.port)
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        self._serving = False
        if self._unsubscribe is not None:
            self._unsubscribe()
        await self._publish_health()
        await self._server.stop(self.settings.shutdown_grace_s if grace is None else grace)

    def _schedule_health(self) -> None:
        task = asyncio.get_running_loop().create_task(self._publish_health())
        self._health_updates.add(task)  # a task nobody references may be collected before it runs
        task.add_done_callback(self._health_updates.discard)

    async def _publish_health(self) -> None:
        """SERVING while started and every background worker runs; NOT_SERVING otherwise."""
        serving = self._serving and self._readiness.ready
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ["", *self._service_names]:
            await self._health.set(name, status)
