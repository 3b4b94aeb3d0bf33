"""OpenTelemetry tracing and the Prometheus `/metrics` endpoint.

One trace crosses the mesh in the W3C `traceparent`:
- gRPC: every outgoing channel (`services.common.channels.channel`) carries the
  current context in call metadata (`ClientTracing`), and the server pipeline
  continues it (`context_from_metadata`);
- HTTP: the registry's MLflow REST server continues the `traceparent` header;
- Kafka: `inject_headers` writes the context into a record's headers and the
  consumer loop starts one CONSUMER span per record from them
  (`consumer_spans`), so a request logged by serving and profiled by
  monitoring is one trace.

Spans are recorded and exported only when an OTLP endpoint is configured
(`exporting()`); otherwise trace ids are still minted and propagated, which
costs next to nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Awaitable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from prometheus_client import start_http_server

_log = logging.getLogger(__name__)
_setup_lock = threading.Lock()
_configured = False
_exporting = False

T = TypeVar("T")

TRACEPARENT = "traceparent"
# Links a span may carry (the drift event links its window's traces): enough to find them, bounded.
MAX_LINKS = 128


def setup_tracing(service_name: str, otlp_endpoint: str = "") -> None:
    """Install the global tracer provider once; export over OTLP when an endpoint is configured.

    TESSERA_TRACE_SAMPLE_RATIO sets the share of root traces recorded (default: all of them
    when exporting, none otherwise)."""
    global _configured, _exporting
    with _setup_lock:
        if _configured:
            return
        # Without an exporter nobody reads recorded spans: record none, but still mint trace
        # ids so payload logs and Kafka headers carry them. A sampled caller is still honoured.
        ratio = float(os.environ.get("TESSERA_TRACE_SAMPLE_RATIO", "1.0" if otlp_endpoint else "0"))
        provider = TracerProvider(
            resource=Resource.create({"service.name": service_name}),
            sampler=ParentBased(TraceIdRatioBased(ratio)),
        )
        if otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(
                BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint, insecure=not _otlp_uses_tls(otlp_endpoint)))
            )
            _exporting = True
        trace.set_tracer_provider(provider)
        _configured = True


def _otlp_uses_tls(endpoint: str) -> bool:
    return endpoint.startswith("https://")


def exporting() -> bool:
    """Whether spans go anywhere; per-record spans are only worth their cost when they do."""
    return _exporting


def shutdown_tracing() -> None:
    """Export what is buffered (a process that stops must not lose its last spans)."""
    provider = trace.get_tracer_provider()
    shutdown = getattr(provider, "shutdown", None)
    if shutdown is not None:
        shutdown()


def start_metrics_server(port: int, host: str = "127.0.0.1") -> int:
    """Serve the default Prometheus registry on `http://host:port/metrics`; returns the bound port."""
    server, _thread = start_http_server(port, addr=host)
    bound = server.server_address[1]
    _log.info("metrics on http://%s:%d/metrics", host, bound)
    return bound


def inject_headers(headers: list[tuple[str, bytes]], context: Context | None = None) -> None:
    """Write the trace context (`context`, or the current one) into a record's headers."""
    # Nothing to propagate outside a span; skipping the propagator keeps the hot produce path cheap.
    if not trace.get_current_span(context).get_span_context().is_valid:
        return
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    headers.extend((key, value.encode()) for key, value in carrier.items())


def extract_context(headers: list[tuple[str, bytes]] | None) -> Context:
    carrier = {key: value.decode(errors="replace") for key, value in (headers or []) if value is not None}
    return propagate.extract(carrier)


def current_trace_id() -> str:
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else ""


def current_traceparent() -> str:
    """The current span's W3C traceparent ("" outside a span): for work that continues it later."""
    if not trace.get_current_span().get_span_context().is_valid:
        return ""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get(TRACEPARENT, "")


def context_from_traceparent(value: str) -> Context | None:
    """The trace context a stored traceparent names; None (the current one) for ""."""
    return propagate.extract({TRACEPARENT: value}) if value else None


def context_from_metadata(metadata: Iterable[Any] | None) -> Context | None:
    """The caller's trace context from gRPC invocation metadata; None (the current one) when absent."""
    for key, value in metadata or ():
        if key == TRACEPARENT:
            carrier = {TRACEPARENT: value.decode(errors="replace") if isinstance(value, bytes) else value}
            for other, state in metadata:
                if other == "tracestate":
                    carrier["tracestate"] = state.decode(errors="replace") if isinstance(state, bytes) else state
            return propagate.extract(carrier)
    return None


def context_from_headers(headers: Any) -> Context | None:
    """The caller's trace context from HTTP headers (any case-insensitive mapping)."""
    value = headers.get(TRACEPARENT)
    if not value:
        return None
    carrier = {TRACEPARENT: value}
    if headers.get("tracestate"):
        carrier["tracestate"] = headers["tracestate"]
    return propagate.extract(carrier)


def link_to_traces(trace_ids: Iterable[str]) -> list[trace.Link]:
    """Links to other traces by id (32 hex digits), e.g. the requests a drift window was computed from.

    Only the trace is known, not a span in it: the link names the trace with a placeholder span id."""
    links: list[trace.Link] = []
    for trace_id in dict.fromkeys(trace_ids):
        if len(links) >= MAX_LINKS:
            break
        try:
            value = int(trace_id, 16) if trace_id else 0
        except ValueError:
            continue
        if value:
            span_context = trace.SpanContext(value, 1, is_remote=True, trace_flags=trace.TraceFlags(1))
            links.append(trace.Link(span_context))
    return links


# -- Kafka consumers --------------------------------------------------------------------------------


@contextlib.contextmanager
def consumer_spans(records: Sequence[Any], group_id: str) -> Iterator[None]:
    """One CONSUMER span per record, child of the context its producer wrote into the headers.

    Each record's span context is set on `record.trace` so a handler that works record by record
    can continue it (`run_in`); a batch of one makes its span current. Without an exporter this
    does nothing: the trace ids still travel in the records the handler writes."""
    if not _exporting:
        yield
        return
    tracer = trace.get_tracer("tessera.kafka")
    spans = []
    for record in records:
        parent = extract_context(record.raw.headers())
        span = tracer.start_span(
            f"{record.topic} process",
            context=parent,
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": record.topic,
                "messaging.consumer.group.name": group_id,
                "messaging.kafka.offset": record.offset,
                "messaging.destination.partition.id": str(record.partition),
            },
        )
        record.trace = trace.set_span_in_context(span, parent)
        spans.append(span)
    token = otel_context.attach(records[0].trace) if len(records) == 1 else None
    try:
        yield
    except BaseException as exc:
        for span in spans:
            span.record_exception(exc)
            span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
        raise
    finally:
        if token is not None:
            otel_context.detach(token)
        for span in spans:
            span.end()


async def run_in(context: Context | None, awaitable: Awaitable[T]) -> T:
    """Await `awaitable` with `context` current (a record's span while a batch is handled record by record)."""
    if context is None:
        return await awaitable
    token = otel_context.attach(context)
    try:
        return await awaitable
    finally:
        otel_context.detach(token)


# -- gRPC clients -----------------------------------------------------------------------------------


class _ClientTracing:
    """Puts the current trace context into the call's metadata, in a CLIENT span when exporting."""

    def _start(self, details: grpc.aio.ClientCallDetails):
        span = None
        if _exporting:
            span = trace.get_tracer("tessera.grpc").start_span(
                (details.method.decode() if isinstance(details.method, bytes) else str(details.method)).lstrip("/"),
                kind=trace.SpanKind.CLIENT,
            )
            ctx = trace.set_span_in_context(span)
        elif trace.get_current_span().get_span_context().is_valid:
            ctx = None
        else:
            return details, None
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=ctx)
        metadata = grpc.aio.Metadata(*(details.metadata or ()))
        for key, value in carrier.items():
            metadata.add(key, value)
        return (
            grpc.aio.ClientCallDetails(
                details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
            ),
            span,
        )

    @staticmethod
    def _end_when_done(call: Any, span: trace.Span | None) -> Any:
        if span is not None:
            # A grpc.aio call's status is read with a coroutine: read it in a task once the call is
            # done. Nothing here may raise: the callback runs inside grpc's own completion path.
            def done(finished: Any) -> None:
                try:
                    task = asyncio.get_running_loop().create_task(_end_span(finished, span))
                    _ENDING.add(task)
                    task.add_done_callback(_ENDING.discard)
                except Exception:  # noqa: BLE001 - no loop: end it without a status
                    span.end()

            call.add_done_callback(done)
        return call


_ENDING: set[asyncio.Task] = set()  # tasks nobody else references may be collected before they run


async def _end_span(call: Any, span: trace.Span) -> None:
    try:
        code = await call.code()
        if code is not None and code != grpc.StatusCode.OK:
            span.set_status(trace.Status(trace.StatusCode.ERROR, code.name))
            span.set_attribute("rpc.grpc.status_code", code.value[0])
    except Exception:  # noqa: BLE001 - a cancelled call may have no status to read
        span.set_status(trace.Status(trace.StatusCode.ERROR, "CANCELLED"))
    finally:
        span.end()


class _UnaryUnary(_ClientTracing, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation, client_call_details, request):
        details, span = self._start(client_call_details)
        return self._end_when_done(await continuation(details, request), span)


class _UnaryStream(_ClientTracing, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation, client_call_details, request):
        details, span = self._start(client_call_details)
        return self._end_when_done(await continuation(details, request), span)


class _StreamUnary(_ClientTracing, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation, client_call_details, request_iterator):
        details, span = self._start(client_call_details)
        return self._end_when_done(await continuation(details, request_iterator), span)


class _StreamStream(_ClientTracing, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation, client_call_details, request_iterator):
        details, span = self._start(client_call_details)
        return self._end_when_done(await continuation(details, request_iterator), span)


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """The interceptors every outgoing channel carries (see `services.common.channels`)."""
    return [_UnaryUnary(), _UnaryStream(), _StreamUnary(), _StreamStream()]
