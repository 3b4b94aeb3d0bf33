"""Smoke: the core paths over gRPC."""

from __future__ import annotations

import math

import pytest
from tessera.registry.v1 import registry_pb2 as pb

from tests.integration.registry.conftest import as_

pytestmark = pytest.mark.integration


async def test_experiment_run_metrics_and_history(registry, schema_of):
    stub = registry.stub
    exp = await stub.CreateExperiment(
        pb.CreateExperimentRequest(name=f"exp-{schema_of}", schema_full_name=schema_of), metadata=as_("admin")
    )
    run = await stub.CreateRun(
        pb.CreateRunRequest(experiment_id=exp.experiment_id, run_name="r1"), metadata=as_("admin")
    )
    run_id = run.info.run_id
    metrics = [pb.Metric(key="loss", value=1.0 / (i + 1), step=i, timestamp_ms=1000 + i) for i in range(100)]
    metrics.append(pb.Metric(key="odd", value=float("nan"), step=0, timestamp_ms=1))
    await stub.LogBatch(
        pb.LogBatchRequest(run_id=run_id, metrics=metrics, params=[pb.Param(key="lr", value="0.1")]),
        metadata=as_("admin"),
    )
    got = await stub.GetRun(pb.GetRunRequest(run_id=run_id), metadata=as_("admin"))
    latest = {m.key: m for m in got.data.metrics}
    assert latest["loss"].step == 99 and math.isnan(latest["odd"].value)
    hist = await stub.GetMetricHistory(
        pb.GetMetricHistoryRequest(run_id=run_id, metric_key="loss", max_points=10), metadata=as_("admin")
    )
    assert len(hist.metrics) == 10 and hist.metrics[0].step == 0 and hist.metrics[-1].step == 99
    found = await stub.SearchRuns(
        pb.SearchRunsRequest(experiment_ids=[exp.experiment_id], filter="metrics.loss < 0.5 and params.lr = '0.1'"),
        metadata=as_("admin"),
    )
    assert [r.info.run_id for r in found.runs] == [run_id]


async def test_history_is_ordered_by_step_and_latest_is_the_highest_step_whatever_the_logging_order(
    registry, schema_of
):
    stub, md = registry.stub, as_("admin")
    exp = await stub.CreateExperiment(
        pb.CreateExperimentRequest(name=f"order-{schema_of}", schema_full_name=schema_of), metadata=md
    )
    run_id = (await stub.CreateRun(pb.CreateRunRequest(experiment_id=exp.experiment_id), metadata=md)).info.run_id
    steps = [5, 1, 9, 3]
    for batch in ([7, 2], steps):  # a later batch may carry earlier steps
        metrics = [pb.Metric(key="acc", value=float(s), step=s, timestamp_ms=100 + s) for s in batch]
        metrics += [pb.Metric(key="lr", value=float(-s), step=s, timestamp_ms=100 + s) for s in batch]
        await stub.LogBatch(pb.LogBatchRequest(run_id=run_id, metrics=metrics), metadata=md)
    history = await stub.GetMetricHistory(pb.GetMetricHistoryRequest(run_id=run_id, metric_key="acc"), metadata=md)
    assert [m.step for m in history.metrics] == [1, 2, 3, 5, 7, 9]
    page = await stub.GetMetricHistory(
        pb.GetMetricHistoryRequest(run_id=run_id, metric_key="lr", page={"page_size": 4}), metadata=md
    )
    rest = await stub.GetMetricHistory(
        pb.GetMetricHistoryRequest(run_id=run_id, metric_key="lr", page={"page_token": page.page.next_page_token}),
        metadata=md,
    )
    assert [m.value for m in page.metrics] + [m.value for m in rest.metrics] == [-1, -2, -3, -5, -7, -9]
    assert rest.page.next_page_token == ""
    run = await stub.GetRun(pb.GetRunRequest(run_id=run_id), metadata=md)
    assert {m.key: m.step for m in run.data.metrics} == {"acc": 9, "lr": 9}
