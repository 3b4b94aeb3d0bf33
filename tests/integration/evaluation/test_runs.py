"""Eval runs end to end on the real platform: the tiny Llama answers, metrics, statistics, results."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from tessera.evaluation.v1 import evaluation_pb2 as pb
from tessera.monitoring.v1 import monitoring_pb2 as mpb
from tessera.monitoring.v1 import monitoring_pb2_grpc
from tessera.registry.v1 import registry_pb2 as rpb

from services.common.auth import bearer
from services.evaluation import metrics
from services.fixtures import capitals
from tests.integration.evaluation.stack import ADMIN, ALICE, LLM_PRICES, Stack

pytestmark = pytest.mark.integration

ROWS = [
    *capitals.evaluation_rows()[:4],
    {"request": "Name a colour.", "expected_response": ["red", "blue"]},
]


async def inference_records(stack: Stack, endpoint: str, wanted: set[str]) -> dict[str, object]:
    """The endpoint's logged requests with these ids, once monitoring has ingested them all."""
    channel = grpc.aio.insecure_channel(stack.monitoring_address)
    stub = monitoring_pb2_grpc.MonitoringServiceStub(channel)
    request = mpb.ListInferenceRecordsRequest(endpoint=endpoint, page={"page_size": 1000})
    request.start_time.FromDatetime(datetime.now(UTC) - timedelta(hours=1))
    request.end_time.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
    try:
        async with asyncio.timeout(120):
            while True:
                reply = await stub.ListInferenceRecords(request, metadata=bearer(ALICE))
                found = {r.request_id: r for r in reply.records if r.request_id in wanted}
                if len(found) == len(wanted):
                    return found
                await asyncio.sleep(1)
    finally:
        await channel.close()


async def test_a_run_scores_every_row_with_intervals_costs_and_a_manifest(stack: Stack, unique: str) -> None:
    dataset, version = await stack.dataset(f"capitals_{unique}", ROWS)
    spec = stack.spec(dataset, version, ["exact_match", "token_f1", "rouge_l", "bleu"])

    started = await stack.start(spec)
    run = await stack.wait(started.eval_run_id)
    results = await stack.results(run.eval_run_id)

    assert run.state == pb.RUN_STATE_SUCCEEDED, run.error_message
    assert (run.completed, run.total, run.failed) == (len(ROWS), len(ROWS), 0)
    assert sorted(int(r.example_id) for r in results) == list(range(len(ROWS)))
    # Deterministic metrics equal the functions on the same answers.
    for r in results:
        refs = ROWS[int(r.example_id)]["expected_response"]
        refs = refs if isinstance(refs, list) else [refs]
        values = {m.metric: m.value for m in r.metrics}
        assert values["exact_match"] == float(metrics.exact_match(r.response, refs))
        assert values["token_f1"] == pytest.approx(metrics.token_f1(r.response, refs))
        assert values["rouge_l"] == pytest.approx(max(metrics.rouge_l(r.response, x).f1 for x in refs))
        assert values["bleu"] == pytest.approx(metrics.sentence_bleu(r.response, refs).score / 100)
        assert r.status == "OK" and r.target_endpoint == stack.llm_endpoint
        price = (LLM_PRICES[0] * r.prompt_tokens + LLM_PRICES[1] * r.completion_tokens) / 1e6
        assert r.HasField("cost_usd") and r.cost_usd == pytest.approx(price)
    # Summaries: Wilson for the pass rate, bootstrap for means, every value measured.
    summaries = {s.metric: s for s in run.metrics}
    exact = summaries["exact_match"]
    assert exact.interval.method == "wilson" and exact.interval.n == len(ROWS) and exact.coverage == 1.0
    assert exact.interval.low <= exact.interval.estimate <= exact.interval.high
    f1 = summaries["token_f1"]
    assert f1.interval.method == "bootstrap-percentile"
    assert f1.interval.estimate == pytest.approx(
        sum(m.value for r in results for m in r.metrics if m.metric == "token_f1") / len(ROWS)
    )
    assert 0 < run.latency.p50_ms <= run.latency.p95_ms
    assert run.HasField("cost_usd") and run.cost_usd == pytest.approx(sum(r.cost_usd for r in results))
    # The manifest says how to run it again.
    manifest = run.manifest
    assert (manifest.dataset, manifest.dataset_version, manifest.target_endpoint) == (
        dataset,
        version,
        stack.llm_endpoint,
    )
    assert list(manifest.target_models) == [f"{stack.llm_model}/1"]
    assert (manifest.seed, manifest.repeats, manifest.sampling.max_tokens) == (7, 1, 12)
    # Each row's request id is a row in the endpoint's inference table, with the row's question.
    logged = await inference_records(stack, stack.llm_endpoint, {r.request_id for r in results})
    for r in results:
        assert logged[r.request_id].outputs["text"] == r.response
    # The summary is an MLflow-compatible run in the registry, linked to the dataset version and model version.
    assert run.mlflow_run_id
    got = await stack.registry.GetRun(rpb.GetRunRequest(run_id=run.mlflow_run_id), metadata=bearer(ADMIN))
    logged_metrics = {m.key: m.value for m in got.data.metrics}
    assert logged_metrics["exact_match"] == pytest.approx(exact.interval.estimate)
    assert logged_metrics["token_f1_ci_low"] == pytest.approx(f1.interval.low)
    lineage = await stack.registry.GetLineage(
        rpb.GetLineageRequest(
            node=rpb.LineageNode(type="RUN", name=run.mlflow_run_id), direction=rpb.LINEAGE_DIRECTION_UPSTREAM
        ),
        metadata=bearer(ADMIN),
    )
    sources = {(e.source.type, e.source.name) for e in lineage.edges}
    assert ("DATASET", f"{dataset}@{version}") in sources
    assert ("MODEL_VERSION", f"{stack.llm_model}/1") in sources
