"""OpenTelemetry tracing and the Prometheus `/metrics` endpoint.

Traces cross Kafka in the W3C `traceparent` header: `inject_headers` writes the
current context into a record's headers and `extract_context` reads it back on
the consumer side, so a request logged by serving and profiled by monitoring
is one trace.
"""

from __future__ import annotations

import logging
import os
import threading

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


def setup_tracing(service_name: str, otlp_endpoint: str = "") -> None:
    """Install the global tracer provider once; export over OTLP when an endpoint is configured.

    TESSERA_TRACE_SAMPLE_RATIO sets the share of root traces recorded (default: all of them
    when exporting, none otherwise)."""
    global _configured
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

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint, insecure=True)))
        trace.set_tracer_provider(provider)
        _configured = True


def start_metrics_server(port: int, host: str = "127.0.0.1") -> int:
    """Serve the default Prometheus registry on `http://host:port/metrics`; returns the bound port."""
    server, _thread = start_http_server(port, addr=host)
    bound = server.server_address[1]
    _log.info("metrics on http://%s:%d/metrics", host, bound)
    return bound


def inject_headers(headers: list[tuple[str, bytes]], context: Context | None = None) -> None:
    # Nothing to propagate outside a span; skipping the propagator keeps the hot produce path cheap.
    if context is None and not trace.get_current_span().get_span_context().is_valid:
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
