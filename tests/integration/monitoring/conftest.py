"""A real monitoring service per test module: in-process gRPC server, real PostgreSQL and Kafka,
its own schema, payload-log topic, drift topic and consumer group."""

from __future__ import annotations

import time
import uuid

import grpc
import numpy as np
import psycopg
import pytest
from psycopg import sql
from tessera.events.v1.payload_log_pb2 import PayloadLog
from tessera.monitoring.v1 import monitoring_pb2_grpc

from services.common import kafka_admin
from services.common.auth import bearer
from services.common.config import load
from services.common.kafka_producer import EventProducer
from services.monitoring.app import MonitoringApp
from services.monitoring.settings import MonitoringSettings

TOKEN = "monitoring-test-token"
METADATA = bearer(TOKEN)
WINDOW = 60


@pytest.fixture(scope="module")
async def monitoring(pg_dsn, kafka_bootstrap):
    suffix = uuid.uuid4().hex[:10]
    payload_topic = f"test.monitoring.logs.{suffix}"
    drift_topic = f"test.monitoring.drift.{suffix}"
    kafka_admin.ensure_topics(kafka_bootstrap, [payload_topic, payload_topic + ".dlq", drift_topic], partitions=1)
    schema = f"monitoring_t_{suffix}"
    settings = load(
        MonitoringSettings,
        pg_dsn=pg_dsn,
        kafka_bootstrap=kafka_bootstrap,
        grpc_port=0,
        monitoring_schema=schema,
        monitoring_payload_topic=payload_topic,
        monitoring_drift_topic=drift_topic,
        monitoring_consumer_group=f"test-monitoring-{suffix}",
        monitoring_window_grace_s=1.0,
        monitoring_idle_watermark_s=1.0,
        monitoring_evaluate_every_s=0.2,
        auth_tokens=f"{TOKEN}=alice",
        monitoring_authz="none",
        monitoring_retention_days=0,
    )
    app = MonitoringApp(settings, serve_metrics=False)
    await app.start()
    await app.consumer.wait_assigned()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    app.stub = monitoring_pb2_grpc.MonitoringServiceStub(channel)
    app.payload_topic = payload_topic
    app.drift_topic = drift_topic
    app.schema = schema
    yield app
    await channel.close()
    await app.stop()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(scope="module")
def producer(kafka_bootstrap):
    p = EventProducer(kafka_bootstrap, client_id="monitoring-test")
    yield p
    p.close()


def past_window_base(windows_back: int = 400) -> int:
    """A window-aligned event time well in the past, so tests control every window."""
    return (int(time.time()) // WINDOW - windows_back) * WINDOW


def payload_log(endpoint: str, request_id: str, event_time: float, latency_ms: float, status: str = "OK") -> PayloadLog:
    log = PayloadLog(
        request_id=request_id,
        endpoint=endpoint,
        served_model="main.default.tiny",
        model_version="1",
        source="grpc",
        status=status,
        latency_ms=latency_ms,
        time_to_first_token_ms=latency_ms / 4,
        prompt_tokens=12,
        completion_tokens=30,
    )
    log.inputs.update({"prompt": "x" * 40})
    log.outputs.update({"text": "y" * 80})
    log.timestamp.FromNanoseconds(int(event_time * 1e9))
    return log


def produce_windows(
    producer: EventProducer,
    topic: str,
    endpoint: str,
    base: int,
    means: list[float],
    per_window: int,
    seed: int = 7,
) -> list[PayloadLog]:
    """One window of `per_window` records per mean (latency ~ N(mean, 10)), in event-time order."""
    rng = np.random.default_rng(seed)
    logs = []
    for w, mean in enumerate(means):
        latencies = rng.normal(mean, 10.0, per_window)
        offsets = np.sort(rng.uniform(0, WINDOW, per_window))
        for i in range(per_window):
            log = payload_log(endpoint, f"{endpoint}-{w}-{i}", base + w * WINDOW + offsets[i], float(latencies[i]))
            producer.produce(topic, log, key=endpoint, record_id=log.request_id)
            logs.append(log)
    producer.flush_sync()
    return logs
