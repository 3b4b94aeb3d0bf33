"""Quality metrics next to drift: the evaluation service's summaries on `tessera.eval.results`, sent by a
real Kafka producer, become rows ListQualityMetrics reads and Prometheus gauges; bad records go to the
DLQ with the reason while the partition keeps moving; SELECT on the endpoint is needed to read them."""

from __future__ import annotations

import math
import time
import uuid

import grpc
import psycopg
import pytest
from google.protobuf import json_format
from prometheus_client import REGISTRY
from psycopg import sql
from tessera.events.v1.evaluation_pb2 import EvalResult, MetricValue
from tessera.monitoring.v1 import monitoring_pb2 as pb
from tessera.monitoring.v1 import monitoring_pb2_grpc

from services.common import kafka_admin
from services.common.config import load
from services.common.kafka_producer import EventProducer
from services.monitoring.app import MonitoringApp
from services.monitoring.settings import MonitoringSettings
from tests.integration.monitoring.conftest import METADATA, TOKEN
from tests.integration.monitoring.test_inference_table_ingest import dead_letter_reasons
from tests.integration.monitoring.test_permissions import (
    ALICE,
    BOB,
    denied,
    grant,
    mesh,
    register_endpoint,
    until_allowed,
)
from tests.polling import eventually

pytestmark = pytest.mark.integration

__all__ = ["mesh"]  # the registry-backed service of test_permissions, for the grant test below

WINDOW = 300


@pytest.fixture(scope="module")
async def quality(pg_dsn, kafka_bootstrap):
    """A monitoring service whose quality consumer reads a topic of its own."""
    suffix = uuid.uuid4().hex[:10]
    results_topic, payload_topic = f"test.eval.results.{suffix}", f"test.quality.logs.{suffix}"
    kafka_admin.ensure_topics(
        kafka_bootstrap,
        [results_topic, results_topic + ".dlq", payload_topic, payload_topic + ".dlq", f"test.quality.drift.{suffix}"],
        partitions=1,
    )
    schema = f"monitoring_q_{suffix}"
    app = MonitoringApp(
        load(
            MonitoringSettings,
            pg_dsn=pg_dsn,
            kafka_bootstrap=kafka_bootstrap,
            grpc_port=0,
            monitoring_schema=schema,
            monitoring_payload_topic=payload_topic,
            monitoring_drift_topic=f"test.quality.drift.{suffix}",
            monitoring_quality_topic=results_topic,
            monitoring_consumer_group=f"test-quality-{suffix}",
            auth_tokens=f"{TOKEN}=alice",
            monitoring_authz="none",
            monitoring_retention_days=0,
        ),
        serve_metrics=False,
    )
    await app.start()
    await app.quality_consumer.wait_assigned()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    app.stub = monitoring_pb2_grpc.MonitoringServiceStub(channel)
    app.results_topic = results_topic
    app.schema = schema
    producer = EventProducer(kafka_bootstrap, client_id="quality-test")
    app.producer_for_tests = producer
    yield app
    producer.close()
    await channel.close()
    await app.stop()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def window_summary(endpoint: str, online_id: str, start: float, values: dict[str, tuple[float | None, int, int]]):
    """What an online evaluation publishes for one window: metric -> (mean, measured, unmeasured)."""
    result = EvalResult(eval_run_id=f"run-{online_id}", target_endpoint=endpoint, online_evaluation_id=online_id)
    result.window_start.FromSeconds(int(start))
    result.window_end.FromSeconds(int(start + WINDOW))
    result.at.FromSeconds(int(start + WINDOW + 5))
    for metric, (mean, measured, unmeasured) in values.items():
        value = MetricValue(metric=metric, measured=measured, unmeasured=unmeasured)
        if mean is not None:
            value.value = mean
        result.metrics.append(value)
    return result


def send(app, *results: EvalResult, as_json: bool = False) -> None:
    for result in results:
        if as_json:
            app.producer_for_tests.produce_bytes(
                app.results_topic,
                json_format.MessageToJson(result).encode(),
                key=result.target_endpoint,
                headers=[("content-type", b"application/json")],
            )
        else:
            app.producer_for_tests.produce(app.results_topic, result, key=result.target_endpoint)
    app.producer_for_tests.flush_sync()


async def listed(stub, endpoint: str, metadata=METADATA, **fields) -> list[pb.QualityMetric]:
    request = pb.ListQualityMetricsRequest(endpoint=endpoint, **fields)
    request.page.page_size = 1000
    return list((await stub.ListQualityMetrics(request, metadata=metadata)).metrics)


def gauge(name: str, endpoint: str, metric: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"endpoint": endpoint, "metric": metric})


def past_window(windows_back: int) -> int:
    return (int(time.time()) // WINDOW - windows_back) * WINDOW


async def test_window_summaries_become_quality_metrics_and_gauges_of_the_latest_window(quality):
    endpoint, online = f"ep-{uuid.uuid4().hex[:8]}", f"online-{uuid.uuid4().hex[:8]}"
    first, second = past_window(3), past_window(2)
    send(
        quality,
        window_summary(endpoint, online, first, {"token_f1": (0.5, 40, 0), "correctness": (0.75, 30, 10)}),
        window_summary(endpoint, online, second, {"token_f1": (0.25, 20, 0), "correctness": (None, 0, 8)}),
    )
    # The same window again as JSON: an older window arriving late moves no gauge back.
    send(quality, window_summary(endpoint, online, past_window(4), {"token_f1": (0.9, 10, 0)}), as_json=True)

    async def all_stored():
        return len(await listed(quality.stub, endpoint)) == 5

    assert await eventually(all_stored)
    rows = await listed(quality.stub, endpoint)
    assert [(r.window_end.seconds, r.metric) for r in rows] == [
        (second + WINDOW, "token_f1"),
        (second + WINDOW, "correctness"),
        (first + WINDOW, "token_f1"),
        (first + WINDOW, "correctness"),
        (past_window(4) + WINDOW, "token_f1"),
    ]
    newest_correctness = rows[1]
    assert newest_correctness.kind == "online" and newest_correctness.online_evaluation_id == online
    assert not newest_correctness.HasField("value")  # nothing measured: no mean, never a 0
    assert newest_correctness.coverage == 0.0 and newest_correctness.unmeasured == 8
    older = rows[3]
    assert older.value == 0.75 and older.measured == 30 and older.coverage == 0.75
    assert older.window_start.seconds == first
    assert [r.metric for r in await listed(quality.stub, endpoint, metric="token_f1")] == ["token_f1"] * 3

    # Gauges: the latest window per endpoint and metric.
    assert gauge("tessera_quality_metric", endpoint, "token_f1") == 0.25
    assert gauge("tessera_quality_coverage", endpoint, "token_f1") == 1.0
    assert math.isnan(gauge("tessera_quality_metric", endpoint, "correctness"))
    assert gauge("tessera_quality_coverage", endpoint, "correctness") == 0.0
    assert gauge("tessera_quality_unmeasured", endpoint, "correctness") == 8


async def test_a_redelivered_summary_changes_nothing(quality):
    endpoint, online = f"ep-{uuid.uuid4().hex[:8]}", f"online-{uuid.uuid4().hex[:8]}"
    start = past_window(2)
    send(quality, window_summary(endpoint, online, start, {"exact_match": (0.4, 10, 0)}))

    async def stored():
        return len(await listed(quality.stub, endpoint)) == 1

    assert await eventually(stored)
    duplicates = REGISTRY.get_sample_value("tessera_quality_duplicate_rows_total") or 0.0
    # The same key again with another value (a replay), then a marker that proves it was consumed.
    send(
        quality,
        window_summary(endpoint, online, start, {"exact_match": (0.9, 10, 0)}),
        window_summary(endpoint, online, start + WINDOW, {"exact_match": (0.5, 10, 0)}),
    )

    async def marker():
        return len(await listed(quality.stub, endpoint)) == 2

    assert await eventually(marker)
    rows = await listed(quality.stub, endpoint)
    assert [r.value for r in rows] == [0.5, 0.4]
    assert REGISTRY.get_sample_value("tessera_quality_duplicate_rows_total") == duplicates + 1


async def test_eval_run_summaries_are_kept_and_per_row_records_are_not(quality):
    endpoint, run = f"ep-{uuid.uuid4().hex[:8]}", f"run-{uuid.uuid4().hex[:8]}"
    row = EvalResult(eval_run_id=run, example_id="0", target_endpoint=endpoint)
    row.metrics.append(MetricValue(metric="exact_match", value=1.0))
    summary = EvalResult(eval_run_id=run, target_endpoint=endpoint)
    summary.at.FromSeconds(int(time.time()))
    summary.metrics.append(MetricValue(metric="exact_match", value=0.6, measured=50, unmeasured=0))
    send(quality, row, summary)

    async def stored():
        return await listed(quality.stub, endpoint)

    rows = await eventually(stored)
    assert [(r.kind, r.eval_run_id, r.online_evaluation_id, r.value) for r in rows] == [("run", run, "", 0.6)]
    assert gauge("tessera_quality_metric", endpoint, "exact_match") is None  # gauges show online windows only


async def test_garbage_nan_and_unbounded_summaries_are_dead_lettered_and_the_partition_keeps_moving(
    quality, kafka_bootstrap
):
    endpoint, online = f"ep-{uuid.uuid4().hex[:8]}", f"online-{uuid.uuid4().hex[:8]}"
    start = past_window(2)
    quality.producer_for_tests.produce_bytes(
        quality.results_topic, b"not an EvalResult", headers=[("content-type", b"application/x-protobuf")]
    )
    nan = window_summary(endpoint, online, start, {"token_f1": (math.nan, 5, 0)})
    long_name = window_summary(endpoint, online, start, {"m" * 129: (0.5, 5, 0)})
    too_many = window_summary(endpoint, online, start, {f"metric_{i}": (0.5, 5, 0) for i in range(65)})
    long_endpoint = window_summary("e" * 257, online, start, {"token_f1": (0.5, 5, 0)})
    negative = window_summary(endpoint, online, start, {"token_f1": (0.5, -1, 0)})
    future = window_summary(endpoint, online, time.time() + 86400 * 30, {"token_f1": (0.5, 5, 0)})
    no_id = window_summary(endpoint, "", start, {"token_f1": (0.5, 5, 0)})
    no_id.eval_run_id = ""
    good = window_summary(endpoint, online, start, {"token_f1": (0.5, 5, 1)})
    send(quality, nan, long_name, too_many, long_endpoint, negative, future, no_id, good)

    async def good_stored():
        return await listed(quality.stub, endpoint)

    rows = await eventually(good_stored)
    assert [(r.metric, r.value, r.measured, r.unmeasured) for r in rows] == [("token_f1", 0.5, 5, 1)]
    reasons = dead_letter_reasons(kafka_bootstrap, quality.results_topic, expected=8)
    assert len(reasons) == 8, reasons
    expected = [  # and the undecodable one, in the decoder's words
        "non-finite value",
        "metric name",
        "65 metrics",
        "target_endpoint",
        "measured must be",
        "window_end",
        "neither online_evaluation_id nor eval_run_id",
    ]
    for fragment in expected:
        assert any(fragment in reason for reason in reasons), (fragment, reasons)


async def test_list_quality_metrics_bounds_its_arguments(quality):
    for request in (
        pb.ListQualityMetricsRequest(),
        pb.ListQualityMetricsRequest(endpoint="e" * 257),
        pb.ListQualityMetricsRequest(endpoint="ep", metric="x" * 200),
        pb.ListQualityMetricsRequest(endpoint="ep", page={"page_token": "not-a-token"}),
        pb.ListQualityMetricsRequest(endpoint="ep", page={"page_size": -1}),
        pb.ListQualityMetricsRequest(endpoint="ep", start_time={"seconds": 253402300800 * 4}),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await quality.stub.ListQualityMetrics(request, metadata=METADATA)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request


async def test_pages_walk_every_row_once(quality):
    endpoint, online = f"ep-{uuid.uuid4().hex[:8]}", f"online-{uuid.uuid4().hex[:8]}"
    send(
        quality,
        *(
            window_summary(endpoint, online, past_window(10 - w), {m: (0.1 * w, 5, 0) for m in ("a", "b", "c")})
            for w in range(5)
        ),
    )

    async def all_stored():
        return len(await listed(quality.stub, endpoint)) == 15

    assert await eventually(all_stored)
    seen, token = [], ""
    while True:
        request = pb.ListQualityMetricsRequest(endpoint=endpoint)
        request.page.page_size, request.page.page_token = 4, token
        reply = await quality.stub.ListQualityMetrics(request, metadata=METADATA)
        seen += [(r.window_end.seconds, r.metric) for r in reply.metrics]
        token = reply.page.next_page_token
        if not token:
            break
    assert len(seen) == 15 and len(set(seen)) == 15
    assert seen == sorted(seen, key=lambda k: (-k[0], [-ord(c) for c in k[1]]))


async def test_reading_quality_metrics_needs_select_on_the_endpoint(mesh):
    registry, stub, _producer, _topic = mesh
    endpoint = f"ep-{uuid.uuid4().hex[:8]}"
    await register_endpoint(registry, endpoint, "alice")

    async def alice_reads():
        await listed(stub, endpoint, metadata=ALICE)
        return True

    assert await until_allowed(alice_reads)
    await denied(stub.ListQualityMetrics(pb.ListQualityMetricsRequest(endpoint=endpoint), metadata=BOB))
    from tessera.registry.v1 import registry_pb2 as reg

    await grant(registry, reg.SECURABLE_TYPE_ENDPOINT, endpoint, "bob", reg.PRIVILEGE_SELECT)

    async def bob_reads():
        await listed(stub, endpoint, metadata=BOB)
        return True

    assert await until_allowed(bob_reads)
