"""The gRPC half of one trace across the mesh, in one process: a channel from
`channels.channel` carries the caller's context and the server pipeline continues it,
for calls that succeed and calls that fail (the client span reads the status)."""

from __future__ import annotations

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tessera.evaluation.v1 import evaluation_pb2, evaluation_pb2_grpc

from services.common import channels, config, telemetry
from services.common.auth import bearer
from services.common.errors import NotFound
from services.common.grpc_server import TesseraServer

pytestmark = pytest.mark.unit

SERVICE = "tessera.evaluation.v1.EvaluationService"


class _Servicer(evaluation_pb2_grpc.EvaluationServiceServicer):
    async def GetEvalRun(self, request, context):
        if request.eval_run_id == "missing":
            raise NotFound("no such run")
        return evaluation_pb2.EvalRun(eval_run_id=telemetry.current_trace_id())


@pytest.fixture(scope="module")
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    if trace.get_tracer_provider() is not provider:
        pytest.skip("another tracer provider was installed first in this process")
    return exporter


@pytest.fixture
async def server_address(spans, monkeypatch):
    monkeypatch.setattr(telemetry, "_exporting", True)
    settings = config.load(config.CommonSettings, environ={}, service_name="traced", auth_tokens="t=alice")
    server = TesseraServer(settings)
    server.add(evaluation_pb2_grpc.add_EvaluationServiceServicer_to_server, _Servicer(), SERVICE)
    port = await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(0)


async def test_the_server_continues_the_callers_trace(spans, server_address):
    spans.clear()
    tracer = trace.get_tracer("test")
    async with channels.channel(server_address) as channel:
        stub = evaluation_pb2_grpc.EvaluationServiceStub(channel)
        with tracer.start_as_current_span("caller") as caller:
            reply = await stub.GetEvalRun(evaluation_pb2.GetEvalRunRequest(eval_run_id="r"), metadata=bearer("t"))
            with pytest.raises(grpc.aio.AioRpcError) as failed:
                await stub.GetEvalRun(evaluation_pb2.GetEvalRunRequest(eval_run_id="missing"), metadata=bearer("t"))
    assert failed.value.code() == grpc.StatusCode.NOT_FOUND
    trace_id = format(caller.get_span_context().trace_id, "032x")
    # The handler ran inside the caller's trace.
    assert reply.eval_run_id == trace_id
    finished = {(s.kind, s.status.status_code): s for s in spans.get_finished_spans() if "GetEvalRun" in s.name}
    client_ok = finished[(trace.SpanKind.CLIENT, trace.StatusCode.UNSET)]
    client_failed = finished[(trace.SpanKind.CLIENT, trace.StatusCode.ERROR)]
    server_ok = finished[(trace.SpanKind.SERVER, trace.StatusCode.UNSET)]
    server_failed = finished[(trace.SpanKind.SERVER, trace.StatusCode.ERROR)]
    for span in (client_ok, client_failed, server_ok, server_failed):
        assert span.context.trace_id == caller.get_span_context().trace_id
    # client span -> caller; server span -> client span (the context crossed in metadata).
    assert client_ok.parent.span_id == caller.get_span_context().span_id
    assert server_ok.parent.span_id == client_ok.context.span_id
    assert server_failed.parent.span_id == client_failed.context.span_id


async def test_without_a_caller_context_the_server_starts_a_trace(spans, server_address):
    spans.clear()
    async with grpc.aio.insecure_channel(server_address) as channel:
        reply = await evaluation_pb2_grpc.EvaluationServiceStub(channel).GetEvalRun(
            evaluation_pb2.GetEvalRunRequest(eval_run_id="r"), metadata=bearer("t")
        )
    (server,) = [s for s in spans.get_finished_spans() if s.kind == trace.SpanKind.SERVER]
    assert server.parent is None
    assert reply.eval_run_id == format(server.context.trace_id, "032x")


def test_link_to_traces_skips_malformed_ids_and_is_bounded():
    ids = ["0" * 32, "zz", "", *(format(i + 1, "032x") for i in range(telemetry.MAX_LINKS + 10))]
    links = telemetry.link_to_traces(ids)
    assert len(links) == telemetry.MAX_LINKS
    assert links[0].context.trace_id == 1
