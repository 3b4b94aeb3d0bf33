"""One trace across the mesh, read back from a real OTLP receiver (Jaeger v2, infra/otel/jaeger.sh).

A request carries a `traceparent` in; serving continues it, asks the registry
for the caller's privilege (a gRPC call that carries the trace on), logs the
payload to Kafka with the trace in the record's headers, and monitoring's
ingest of that record is a span of the same trace. The same holds for a
request that arrives over Kafka, and for a request to the registry's MLflow
REST API. The test finds every span by the trace id it chose.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import numpy as np
import psycopg
import pytest
import pytest_asyncio
from confluent_kafka import Consumer, Producer
from inference import grpc_service_pb2_grpc
from psycopg import sql
from tessera.events.v1.drift_pb2 import DriftEvent
from tessera.events.v1.payload_log_pb2 import PayloadLog
from tessera.monitoring.v1 import monitoring_pb2 as mpb
from tessera.monitoring.v1 import monitoring_pb2_grpc

from services.common import telemetry
from services.common.auth import bearer
from services.common.kafka_producer import EventProducer
from services.fixtures.mesh_processes import (
    ADMIN_TOKEN,
    USER_TOKENS,
    Mesh,
    deploy_tabular,
    free_port,
    start_mesh,
    tensor_request,
)
from tests.polling import eventually

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
JAEGER = ROOT / "infra" / "otel" / "jaeger.sh"
PER_WINDOW = 250


@dataclass
class Jaeger:
    otlp_endpoint: str
    query_url: str

    def trace(self, trace_id: str) -> dict | None:
        try:
            with urllib.request.urlopen(f"{self.query_url}/api/traces/{trace_id}", timeout=5) as reply:
                data = json.load(reply).get("data") or []
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
        return data[0] if data else None


@pytest.fixture(scope="module")
def jaeger(tmp_path_factory):
    ports = {name: free_port() for name in ("OTLP", "OTLP_HTTP", "QUERY", "QUERY_GRPC", "HEALTH")}
    env = {
        **os.environ,
        "TESSERA_DATA_DIR": str(tmp_path_factory.mktemp("jaeger")),
        **{f"TESSERA_JAEGER_{name}_PORT": str(port) for name, port in ports.items()},
    }
    # The first run builds Jaeger from the Go module proxy (cached under ~/.cache/tessera/bin).
    subprocess.run(["bash", str(JAEGER), "start"], env=env, check=True, timeout=3600)
    yield Jaeger(f"http://127.0.0.1:{ports['OTLP']}", f"http://127.0.0.1:{ports['QUERY']}")
    subprocess.run(["bash", str(JAEGER), "stop"], env=env, check=False, timeout=60)


@pytest_asyncio.fixture(scope="module")
async def traced(jaeger: Jaeger, kafka_bootstrap: str, pg_dsn: str, request: pytest.FixtureRequest):
    mesh = await start_mesh(
        kafka_bootstrap,
        pg_dsn,
        Path(tempfile.mkdtemp(prefix="tessera-traced-")),
        partitions=1,
        extra_env={"TESSERA_OTLP_ENDPOINT": jaeger.otlp_endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200"},
        # The drift test monitors an endpoint of its own that no registry knows: monitoring's
        # authorization is not the subject here.
        monitoring_env={"TESSERA_MONITORING_AUTHZ": "none"},
    )
    try:
        endpoint = await deploy_tabular(mesh, mesh.serving[0], users=["alice", "bob"])
        yield mesh, endpoint
    finally:
        mesh.stop()
    if not request.session.testsfailed:  # after a failure the service logs stay for reading
        shutil.rmtree(mesh.work, ignore_errors=True)


def _traceparent() -> tuple[str, str]:
    trace_id = secrets.token_hex(16)
    return trace_id, f"00-{trace_id}-{secrets.token_hex(8)}-01"


def _spans_by_service(found: dict) -> dict[str, set[str]]:
    services = {key: process["serviceName"] for key, process in found["processes"].items()}
    spans: dict[str, set[str]] = {}
    for span in found["spans"]:
        spans.setdefault(services[span["processID"]], set()).add(span["operationName"])
    return spans


async def _wait_for_trace(jaeger: Jaeger, trace_id: str, wanted: dict[str, list[str]], timeout_s: float = 60.0):
    """Poll Jaeger until the trace holds a span named like each of `wanted` (service -> name parts)."""
    deadline = time.monotonic() + timeout_s
    spans: dict[str, set[str]] = {}
    while time.monotonic() < deadline:
        found = await asyncio.to_thread(jaeger.trace, trace_id)
        if found is not None:
            spans = _spans_by_service(found)
            if all(
                any(part in name for name in spans.get(service, ()))
                for service, parts in wanted.items()
                for part in parts
            ):
                return found, spans
        await asyncio.sleep(0.5)
    raise AssertionError(f"trace {trace_id} never held {wanted}; it has {spans}")


def _trace_ids_ingested(mesh: Mesh, request_id: str) -> list[str]:
    with psycopg.connect(mesh.pg_dsn) as conn:
        rows = conn.execute(
            sql.SQL("SELECT trace_id FROM {}.inference_records WHERE request_id = %s").format(
                sql.Identifier(mesh.schemas["monitoring"])
            ),
            (request_id,),
        ).fetchall()
    return [row[0] for row in rows]


async def test_a_grpc_request_is_one_trace_through_serving_registry_and_monitoring(traced, jaeger):
    mesh, endpoint = traced
    trace_id, traceparent = _traceparent()
    request_id = f"traced-grpc-{trace_id[:8]}"
    async with grpc.aio.insecure_channel(mesh.serving[0].address) as channel:
        await grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            tensor_request(endpoint.name, request_id),
            metadata=(*bearer(USER_TOKENS["alice"]), ("traceparent", traceparent)),
        )
    found, spans = await _wait_for_trace(
        jaeger,
        trace_id,
        {
            "serving": ["ModelInfer", "CheckPrivilege"],  # its server span and its call to the registry
            "registry": ["CheckPrivilege"],
            "monitoring": [f"{mesh.topics['payloads']} process"],
        },
    )
    # Every span of every service hangs off the caller's trace: none started a trace of its own.
    assert {span["traceID"] for span in found["spans"]} == {trace_id}
    assert _trace_ids_ingested(mesh, request_id) == [trace_id]


async def test_a_request_over_kafka_is_one_trace_too(traced, jaeger):
    mesh, endpoint = traced
    trace_id, traceparent = _traceparent()
    request_id = f"traced-kafka-{trace_id[:8]}"
    body = {
        "request_id": request_id,
        "endpoint": endpoint.name,
        "tensors": {"features": [[1, 1, 1, 1]], "category": [5]},
        "auth_token": USER_TOKENS["bob"],
    }
    producer = Producer({"bootstrap.servers": mesh.kafka_bootstrap})
    producer.produce(
        mesh.topics["requests"],
        json.dumps(body).encode(),
        key=request_id,
        headers=[("content-type", b"application/json"), ("traceparent", traceparent.encode())],
    )
    assert producer.flush(30) == 0
    await _wait_for_trace(
        jaeger,
        trace_id,
        {
            "serving": [f"{mesh.topics['requests']} process", "CheckPrivilege"],
            "registry": ["CheckPrivilege"],
            "monitoring": [f"{mesh.topics['payloads']} process"],
        },
    )
    assert _trace_ids_ingested(mesh, request_id) == [trace_id]


async def test_the_mlflow_rest_api_continues_the_callers_trace(traced, jaeger):
    mesh, _endpoint = traced
    trace_id, traceparent = _traceparent()
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"http://127.0.0.1:{mesh.registry_http_port}/api/2.0/mlflow/registered-models/search?max_results=5",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "traceparent": traceparent},
        ) as reply,
    ):
        assert reply.status == 200
    await _wait_for_trace(jaeger, trace_id, {"registry": ["GET /api/2.0/mlflow/registered-models/search"]})


async def test_without_a_traceparent_each_request_gets_a_trace_of_its_own(traced, jaeger):
    """The payload log names the trace serving started, and Jaeger has it: the id in the
    inference table leads to the request's spans."""
    mesh, endpoint = traced
    request_id = f"untraced-{secrets.token_hex(4)}"
    async with grpc.aio.insecure_channel(mesh.serving[0].address) as channel:
        await grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            tensor_request(endpoint.name, request_id), metadata=bearer(USER_TOKENS["alice"])
        )
    ids = await eventually(lambda: _trace_ids_ingested(mesh, request_id), timeout=60)
    assert len(ids) == 1 and len(ids[0]) == 32
    await _wait_for_trace(
        jaeger, ids[0], {"serving": ["ModelInfer"], "monitoring": [f"{mesh.topics['payloads']} process"]}
    )


async def test_a_drift_event_links_the_traces_of_its_window(traced, jaeger):
    mesh, _endpoint = traced
    endpoint, window = f"drifting-{secrets.token_hex(4)}", 60
    rng = np.random.default_rng(5)
    monitor = mpb.Monitor(endpoint=endpoint, window_seconds=window, features=[mpb.FeatureSpec(path="latency_ms")])
    monitor.baseline.reference.values.add(feature="latency_ms", numbers=rng.normal(100, 10, 2000))
    async with grpc.aio.insecure_channel(mesh.monitoring[0].address) as channel:
        created = await monitoring_pb2_grpc.MonitoringServiceStub(channel).CreateMonitor(
            mpb.CreateMonitorRequest(monitor=monitor), metadata=bearer(ADMIN_TOKEN)
        )
    base = (int(time.time()) // window - 30) * window
    # Two windows of requests, each with a trace of its own; the second one's latency drifts.
    traces: dict[int, set[str]] = {0: set(), 1: set()}
    producer = EventProducer(mesh.kafka_bootstrap, client_id="drift-trace-test")
    try:
        for w, mean in enumerate((100.0, 160.0)):
            # More than the monitor's minimum window count (200), so the drift counts.
            for i, latency in enumerate(rng.normal(mean, 10, PER_WINDOW)):
                log = PayloadLog(
                    request_id=f"{endpoint}-{w}-{i}",
                    endpoint=endpoint,
                    served_model="m",
                    model_version="1",
                    source="grpc",
                    status="OK",
                    latency_ms=float(latency),
                    trace_id=secrets.token_hex(16),
                )
                log.timestamp.FromNanoseconds(int((base + w * window + i * (window - 1) / PER_WINDOW) * 1e9))
                traces[w].add(log.trace_id)
                producer.produce(mesh.topics["payloads"], log, key=endpoint, record_id=log.request_id)
        await producer.flush()
    finally:
        producer.close()
    event_trace = await eventually(lambda: _drift_event_trace(mesh, created.monitor_id, base + window), timeout=90)
    assert event_trace, "no drift event for the drifting window"
    found, spans = await _wait_for_trace(jaeger, event_trace, {"monitoring": ["drift event"]})
    (drift_span,) = [s for s in found["spans"] if s["operationName"] == "drift event"]
    linked = {ref["traceID"] for ref in drift_span.get("references", []) if ref["traceID"] != event_trace}
    # The event links requests of the window it was computed from (as many as a span may carry),
    # and none of another window.
    assert linked <= traces[1]
    assert len(linked) == min(PER_WINDOW, telemetry.MAX_LINKS)


def _drift_event_trace(mesh: Mesh, monitor_id: str, window_start: int) -> str | None:
    """The trace id a DETECTED event for the window carries in its record's traceparent."""
    consumer = Consumer(
        {"bootstrap.servers": mesh.kafka_bootstrap, "group.id": secrets.token_hex(6), "auto.offset.reset": "earliest"}
    )
    try:
        consumer.subscribe([mesh.topics["drift"]])
        for message in consumer.consume(1000, 3.0):
            if message.error():
                continue
            event = DriftEvent.FromString(message.value())
            if event.monitor_id == monitor_id and event.window_start.seconds == window_start:
                headers = dict(message.headers() or [])
                if "traceparent" in headers:
                    return headers["traceparent"].decode().split("-")[1]
        return None
    finally:
        consumer.close()
