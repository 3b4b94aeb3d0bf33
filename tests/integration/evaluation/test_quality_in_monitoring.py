"""End to end: the real evaluation service's online evaluation scores an endpoint's logged requests, and
monitoring, reading its `tessera.eval.results`, shows the window's quality metrics through
ListQualityMetrics and the Prometheus gauges, equal to the summary the service published."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import psycopg
import pytest
from prometheus_client import REGISTRY
from psycopg import sql
from tessera.evaluation.v1 import evaluation_pb2 as epb
from tessera.events.v1 import serving_pb2 as serving_events
from tessera.monitoring.v1 import monitoring_pb2 as pb
from tessera.monitoring.v1 import monitoring_pb2_grpc
from tessera.serving.v1 import serving_pb2 as spb

from services.common import kafka_admin
from services.common.auth import bearer
from services.common.config import load
from services.monitoring.app import MonitoringApp
from services.monitoring.settings import MonitoringSettings
from tests.integration.evaluation.stack import ALICE, Stack

pytestmark = pytest.mark.integration

TOKEN = "quality-online-token"


@pytest.fixture(scope="module")
async def platform(stack: Stack, kafka_bootstrap, pg_dsn):
    """The evaluation tests' platform, plus a monitoring service whose quality consumer reads the
    evaluation service's results topic (the session's platform, whose own monitoring reads payload logs)."""
    suffix = uuid.uuid4().hex[:8]
    payload_topic = f"test.quality.online.logs.{suffix}"
    kafka_admin.ensure_topics(
        kafka_bootstrap,
        [payload_topic, payload_topic + ".dlq", f"test.quality.online.drift.{suffix}"],
        partitions=1,
    )
    schema = f"monitoring_qo_{suffix}"
    quality = MonitoringApp(
        load(
            MonitoringSettings,
            pg_dsn=pg_dsn,
            kafka_bootstrap=kafka_bootstrap,
            grpc_port=0,
            monitoring_schema=schema,
            monitoring_payload_topic=payload_topic,
            monitoring_drift_topic=f"test.quality.online.drift.{suffix}",
            monitoring_quality_topic=stack.results_topic,
            monitoring_consumer_group=f"test-quality-online-{suffix}",
            auth_tokens=f"{TOKEN}=alice",
            monitoring_authz="none",
            monitoring_retention_days=0,
        ),
        serve_metrics=False,
    )
    await quality.start()
    await quality.quality_consumer.wait_assigned()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{quality.port}")
    try:
        yield stack, monitoring_pb2_grpc.MonitoringServiceStub(channel)
    finally:
        await channel.close()
        await quality.stop()
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


async def test_an_online_evaluation_window_appears_in_monitoring(platform):
    stack, monitoring = platform
    unique = uuid.uuid4().hex[:8]
    created = await stack.eval.CreateOnlineEvaluation(
        epb.CreateOnlineEvaluationRequest(
            online_evaluation=epb.OnlineEvaluation(
                endpoint=stack.llm_endpoint,
                metrics=["safety", "relevance_to_query"],
                judge_endpoint=stack.scripted_endpoint,
                interval_seconds=10,
                max_rows_per_window=50,
            )
        ),
        metadata=bearer(ALICE),
    )
    try:
        for i in range(3):
            await stack.serving.Generate(
                spb.GenerateRequest(
                    endpoint=stack.llm_endpoint,
                    chat=serving_events.ChatList(
                        messages=[serving_events.ChatMessage(role="user", content=f"Tell me fact {i} {unique}.")]
                    ),
                    sampling=serving_events.SamplingParams(max_tokens=8, temperature=0.0),
                    request_id=f"quality-{unique}-{i}",
                ),
                metadata=bearer(ALICE),
            )
        request = pb.ListQualityMetricsRequest(endpoint=stack.llm_endpoint)
        request.page.page_size = 1000
        key = created.online_evaluation_id
        async with asyncio.timeout(400):
            while True:
                reply = await monitoring.ListQualityMetrics(request, metadata=bearer(TOKEN))
                # A window that scored something (earlier windows may have had no requests).
                rows = [r for r in reply.metrics if r.online_evaluation_id == key and r.measured + r.unmeasured]
                if {r.metric for r in rows} >= {"safety", "relevance_to_query"}:
                    break
                await asyncio.sleep(1.0)
    finally:
        await stack.eval.DeleteOnlineEvaluation(
            epb.DeleteOnlineEvaluationRequest(online_evaluation_id=created.online_evaluation_id), metadata=bearer(ALICE)
        )
    by_metric = {r.metric: r for r in rows}
    for row in rows:
        assert row.kind == "online" and row.endpoint == stack.llm_endpoint
        assert row.window_start.ToDatetime() < row.window_end.ToDatetime()
        assert row.coverage == pytest.approx(row.measured / (row.measured + row.unmeasured))
    # The scripted judge never answers with a SCORE line: relevance is unmeasured, with no mean.
    relevance = by_metric["relevance_to_query"]
    assert relevance.measured == 0 and not relevance.HasField("value") and relevance.coverage == 0.0
    newest = max(rows, key=lambda r: r.window_end.ToNanoseconds())
    labels = {"endpoint": stack.llm_endpoint, "metric": newest.metric}
    coverage = REGISTRY.get_sample_value("tessera_quality_coverage", labels)
    assert coverage is not None  # the gauge follows the newest window it has seen
