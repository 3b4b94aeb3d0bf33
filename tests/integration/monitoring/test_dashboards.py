"""Every panel of every Grafana dashboard returns data from a real Prometheus scraping a loaded
monitoring service (which also exports the shared runtime's gRPC and Kafka metrics)."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import grpc
import numpy as np
import psycopg
import pytest
from psycopg import sql
from tessera.events.v1.evaluation_pb2 import EvalResult, MetricValue
from tessera.monitoring.v1 import monitoring_pb2 as pb
from tessera.monitoring.v1 import monitoring_pb2_grpc

from services.common import kafka_admin
from services.common.config import REPO_ROOT, load
from services.common.kafka_producer import EventProducer
from services.monitoring.app import MonitoringApp
from services.monitoring.settings import MonitoringSettings
from services.serving import usage
from tests.integration.monitoring.conftest import METADATA, TOKEN, WINDOW, past_window_base, payload_log

pytestmark = pytest.mark.integration

DASHBOARDS = REPO_ROOT / "infra" / "grafana" / "dashboards"
# Grafana's variables, as a query over every value would expand them.
SUBSTITUTIONS = {"$__rate_interval": "30s", "$endpoint": ".*", "$monitor": ".*"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def panel_queries() -> list[tuple[str, str, str]]:
    queries = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel["targets"]:
                expr = target["expr"]
                for name, value in SUBSTITUTIONS.items():
                    expr = expr.replace(name, value)
                queries.append((path.stem, panel["title"], expr))
    return queries


def has_data(prometheus: str, expr: str) -> bool:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as reply:
        body = json.loads(reply.read())
    assert body["status"] == "success", body
    return any(math.isfinite(float(series["value"][1])) for series in body["data"]["result"])


def start_prometheus(binary: str, workdir: Path, target_port: int, port: int) -> subprocess.Popen:
    """The real server on 127.0.0.1 with a temporary config and data folder, scraping every second."""
    (workdir / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: tessera\n"
        "    static_configs:\n"
        f"      - targets: ['127.0.0.1:{target_port}']\n"
        "        labels: {service: monitoring}\n"
    )
    return subprocess.Popen(
        [
            binary,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.fixture(scope="module")
async def loaded_service(pg_dsn, kafka_bootstrap, tmp_path_factory):
    binary = shutil.which("prometheus")
    assert binary, "the Prometheus server is not installed: run infra/prometheus/install.sh"
    suffix = uuid.uuid4().hex[:10]
    payload_topic, drift_topic = f"test.dash.logs.{suffix}", f"test.dash.drift.{suffix}"
    results_topic = f"test.dash.eval.results.{suffix}"
    kafka_admin.ensure_topics(
        kafka_bootstrap,
        [payload_topic, payload_topic + ".dlq", drift_topic, results_topic, results_topic + ".dlq"],
        partitions=1,
    )
    schema = f"monitoring_d_{suffix}"
    settings = load(
        MonitoringSettings,
        pg_dsn=pg_dsn,
        kafka_bootstrap=kafka_bootstrap,
        grpc_port=0,
        metrics_port=0,
        monitoring_schema=schema,
        monitoring_payload_topic=payload_topic,
        monitoring_drift_topic=drift_topic,
        monitoring_quality_topic=results_topic,
        monitoring_consumer_group=f"test-dash-{suffix}",
        monitoring_authz="none",
        monitoring_window_grace_s=1.0,
        monitoring_idle_watermark_s=1.0,
        monitoring_evaluate_every_s=0.2,
        auth_tokens=f"{TOKEN}=alice",
    )
    app = MonitoringApp(settings)
    await app.start()
    port = free_port()
    prometheus = start_prometheus(binary, tmp_path_factory.mktemp("prometheus"), app.metrics_port, port)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    producer = EventProducer(kafka_bootstrap, client_id="dashboard-test")
    try:
        await app.consumer.wait_assigned()
        stub = monitoring_pb2_grpc.MonitoringServiceStub(channel)
        yield {
            "prometheus": f"http://127.0.0.1:{port}",
            "stub": stub,
            "producer": producer,
            "topic": payload_topic,
            "results_topic": results_topic,
        }
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=30)
        producer.close()
        await channel.close()
        await app.stop()
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def produce(producer: EventProducer, topic: str, endpoint: str, times, means, rng, tag: str) -> None:
    for i, (t, mean) in enumerate(zip(times, means, strict=True)):
        status = "RESOURCE_EXHAUSTED" if rng.random() < 0.05 else "OK"
        log = payload_log(endpoint, f"{endpoint}-{tag}-{i}", t, float(rng.normal(mean, 10)), status)
        log.labels["region"] = "eu" if i % 2 else "us"
        producer.produce(topic, log, key=endpoint, record_id=log.request_id)


def serving_usage(endpoint: str) -> None:
    """The usage panels read serving's own counters. This process exports the same registry the
    monitoring app serves, so they are counted here as serving's UsageMeter counts an admitted
    call (tests/integration/serving/test_usage_budgets.py checks serving counts them for real)."""
    usage.USAGE_TOKENS.labels(endpoint, "alice", "prompt").inc(12)
    usage.USAGE_TOKENS.labels(endpoint, "alice", "completion").inc(30)
    usage.USAGE_COST.labels(endpoint, "alice").inc(0.0021)
    usage.USAGE_UNPRICED.labels(endpoint, "bob").inc()


def online_evaluation_window(producer: EventProducer, topic: str, endpoint: str, window_start: int) -> None:
    """What the evaluation service's online evaluation publishes for one scored window."""
    result = EvalResult(eval_run_id="dash-run", target_endpoint=endpoint, online_evaluation_id="dash-online")
    result.window_start.FromSeconds(window_start)
    result.window_end.FromSeconds(window_start + WINDOW)
    result.metrics.append(MetricValue(metric="token_f1", value=0.62, measured=45, unmeasured=0))
    result.metrics.append(MetricValue(metric="correctness", value=0.8, measured=40, unmeasured=5))
    producer.produce(topic, result, key=endpoint)


async def test_every_dashboard_panel_returns_data_under_load(loaded_service):
    stub, producer, topic = loaded_service["stub"], loaded_service["producer"], loaded_service["topic"]
    endpoint, base, rng = f"dash-{uuid.uuid4().hex[:6]}", past_window_base(500), np.random.default_rng(3)
    monitor = pb.Monitor(
        endpoint=endpoint,
        window_seconds=WINDOW,
        slices=["labels.region"],
        features=[pb.FeatureSpec(path="latency_ms"), pb.FeatureSpec(path="finish_reason")],
    )
    monitor.baseline.time_range.start.FromSeconds(base)
    monitor.baseline.time_range.end.FromSeconds(base + 2 * WINDOW)
    await stub.CreateMonitor(pb.CreateMonitorRequest(monitor=monitor), metadata=METADATA)
    # Past windows with a shift (drift values, alarms, events), then a redelivery and a poison record.
    means = np.repeat([100, 100, 100, 130, 130], 600)
    times = base + np.repeat(np.arange(5), 600) * WINDOW + np.tile(np.linspace(0, WINDOW - 1, 600), 5)
    produce(producer, topic, endpoint, times, means, rng, "past")
    produce(producer, topic, endpoint, times[:100], means[:100], rng, "past")
    online_evaluation_window(producer, loaded_service["results_topic"], endpoint, base)
    producer.produce_bytes(topic, b"not a payload log", headers=[("content-type", b"application/x-protobuf")])
    producer.flush_sync()
    await stub.ListMonitors(pb.ListMonitorsRequest(), metadata=METADATA)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.GetMonitor(pb.GetMonitorRequest(monitor_id="missing"), metadata=METADATA)

    queries = panel_queries()
    assert len(queries) >= 20
    missing = queries
    deadline, round_ = time.monotonic() + 120, 0
    while missing and time.monotonic() < deadline:
        # A live trickle keeps every rate() above zero while Prometheus scrapes.
        now = time.time()
        produce(producer, topic, endpoint, now - np.linspace(0, 1, 50), [100] * 50, rng, f"live{round_}")
        producer.flush_sync()
        await stub.ListMonitors(pb.ListMonitorsRequest(), metadata=METADATA)
        serving_usage(endpoint)
        missing = [q for q in missing if not has_data(loaded_service["prometheus"], q[2])]
        round_ += 1
        await asyncio.sleep(1.0)
    assert not missing, "panels without data:\n" + "\n".join(f"{d} / {t}: {e}" for d, t, e in missing)
