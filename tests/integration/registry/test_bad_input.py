"""Bad input gets a clear status and message, and the service keeps serving."""

from __future__ import annotations

import grpc
import pytest
from tessera.registry.v1 import registry_pb2 as pb

from tests.integration.registry.conftest import as_

pytestmark = pytest.mark.integration

INVALID, NOT_FOUND, EXISTS, PRECONDITION = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.FAILED_PRECONDITION,
)


async def _status(call) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err.code(), err.details()
    return grpc.StatusCode.OK, ""


async def test_malformed_unknown_changed_and_oversized_input_is_refused_clearly(registry, schema_of):
    s, md = registry.stub, as_("admin")
    exp = await s.CreateExperiment(
        pb.CreateExperimentRequest(name=f"bad-{schema_of}", schema_full_name=schema_of), metadata=md
    )
    run = (await s.CreateRun(pb.CreateRunRequest(experiment_id=exp.experiment_id), metadata=md)).info.run_id
    await s.LogBatch(pb.LogBatchRequest(run_id=run, params=[pb.Param(key="lr", value="0.1")]), metadata=md)
    model = f"{schema_of}.m"
    await s.CreateRegisteredModel(pb.CreateRegisteredModelRequest(full_name=model), metadata=md)

    async def escaping_upload():
        yield pb.UploadArtifactsRequest(target=pb.ArtifactTarget(run_id=run))
        yield pb.UploadArtifactsRequest(chunk=pb.ArtifactChunk(path="../../etc/evil", data=b"x"))

    cases = {
        "catalog name": (
            s.CreateCatalog(pb.CreateCatalogRequest(name="Bad-Name"), metadata=md),
            INVALID,
            "catalog name",
        ),
        "model name": (
            s.CreateRegisteredModel(pb.CreateRegisteredModelRequest(full_name="only.two"), metadata=md),
            INVALID,
            "catalog.schema.model",
        ),
        "duplicate model": (
            s.CreateRegisteredModel(pb.CreateRegisteredModelRequest(full_name=model), metadata=md),
            EXISTS,
            "already exists",
        ),
        "unknown run": (s.GetRun(pb.GetRunRequest(run_id="nope"), metadata=md), NOT_FOUND, "nope"),
        "unknown experiment": (
            s.GetExperiment(pb.GetExperimentRequest(experiment_id="999999999"), metadata=md),
            NOT_FOUND,
            "999999999",
        ),
        "experiment id": (
            s.GetExperiment(pb.GetExperimentRequest(experiment_id="abc"), metadata=md),
            INVALID,
            "experiment id",
        ),
        "unknown version": (
            s.GetModelVersion(pb.GetModelVersionRequest(model_name=model, version=7), metadata=md),
            NOT_FOUND,
            "7",
        ),
        "version zero": (
            s.GetModelVersion(pb.GetModelVersionRequest(model_name=model, version=0), metadata=md),
            INVALID,
            "version",
        ),
        "changed param": (
            s.LogBatch(pb.LogBatchRequest(run_id=run, params=[pb.Param(key="lr", value="0.2")]), metadata=md),
            INVALID,
            "write-once",
        ),
        "oversized batch": (
            s.LogBatch(
                pb.LogBatchRequest(run_id=run, metrics=[pb.Metric(key="m", value=1, step=i) for i in range(1001)]),
                metadata=md,
            ),
            INVALID,
            "at most 1000",
        ),
        "empty metric key": (
            s.LogBatch(pb.LogBatchRequest(run_id=run, metrics=[pb.Metric(key="", value=1)]), metadata=md),
            INVALID,
            "metric key",
        ),
        "reserved alias": (
            s.SetModelAlias(pb.SetModelAliasRequest(model_name=model, alias="latest", version=1), metadata=md),
            INVALID,
            "alias",
        ),
        "bad filter": (
            s.SearchRuns(
                pb.SearchRunsRequest(experiment_ids=[exp.experiment_id], filter="metrics.loss <<< 1"), metadata=md
            ),
            INVALID,
            "filter",
        ),
        "filter with OR": (
            s.SearchRuns(
                pb.SearchRunsRequest(experiment_ids=[exp.experiment_id], filter="params.a = '1' or params.b = '2'"),
                metadata=md,
            ),
            INVALID,
            "AND",
        ),
        "page token": (
            s.ListCatalogs(pb.ListCatalogsRequest(page={"page_token": "garbage"}), metadata=md),
            INVALID,
            "page token",
        ),
        "run status": (s.UpdateRun(pb.UpdateRunRequest(run_id=run, status=42), metadata=md), INVALID, "status"),
        "escaping path": (s.UploadArtifacts(escaping_upload(), metadata=md), INVALID, ".."),
        "lineage type": (
            s.CreateLineageEdge(
                pb.CreateLineageEdgeRequest(
                    source=pb.LineageNode(type="table", name="t"), target=pb.LineageNode(type="RUN", name=run)
                ),
                metadata=md,
            ),
            INVALID,
            "upper case",
        ),
        "unknown source": (
            s.CreateModelVersion(pb.CreateModelVersionRequest(model_name=model, source="s3://bucket/x"), metadata=md),
            INVALID,
            "unsupported source",
        ),
        "non-empty schema": (
            s.DeleteSchema(pb.DeleteSchemaRequest(full_name=schema_of), metadata=md),
            PRECONDITION,
            "not empty",
        ),
        "finalize twice": (
            s.FinalizeModelVersion(pb.FinalizeModelVersionRequest(model_name=model, version=1), metadata=md),
            NOT_FOUND,
            "does not exist",
        ),
    }
    results = {name: await _status(call) for name, (call, _, _) in cases.items()}
    for name, (_, code, fragment) in cases.items():
        got_code, message = results[name]
        assert (name, got_code) == (name, code), message
        assert fragment in message, (name, message)
    # Nothing half-written: the param kept its first value; the oversized batch logged nothing.
    got = await s.GetRun(pb.GetRunRequest(run_id=run), metadata=md)
    assert [(p.key, p.value) for p in got.data.params] == [("lr", "0.1")] and list(got.data.metrics) == []
    # A status enum from a newer client: UNSPECIFIED-like values are refused, the service keeps serving.
    assert (await s.GetRun(pb.GetRunRequest(run_id=run), metadata=md)).info.run_id == run


async def test_a_finalized_version_refuses_new_files(registry, schema_of):
    s, md = registry.stub, as_("admin")
    model = f"{schema_of}.frozen"
    await s.CreateRegisteredModel(pb.CreateRegisteredModelRequest(full_name=model), metadata=md)
    await s.CreateModelVersion(pb.CreateModelVersionRequest(model_name=model), metadata=md)
    await s.FinalizeModelVersion(pb.FinalizeModelVersionRequest(model_name=model, version=1), metadata=md)

    async def upload():
        yield pb.UploadArtifactsRequest(
            target=pb.ArtifactTarget(model_version=pb.ModelVersionRef(model_name=model, version=1))
        )
        yield pb.UploadArtifactsRequest(chunk=pb.ArtifactChunk(path="late.bin", data=b"x"))

    code, message = await _status(s.UploadArtifacts(upload(), metadata=md))
    assert code == PRECONDITION and "READY" in message
    code, message = await _status(
        s.FinalizeModelVersion(pb.FinalizeModelVersionRequest(model_name=model, version=1), metadata=md)
    )
    assert code == PRECONDITION


async def test_steps_at_the_int64_limits_are_kept_and_beyond_them_refused(registry, schema_of):
    import aiohttp

    s, md = registry.stub, as_("admin")
    exp = await s.CreateExperiment(
        pb.CreateExperimentRequest(name=f"limits-{schema_of}", schema_full_name=schema_of), metadata=md
    )
    run = (await s.CreateRun(pb.CreateRunRequest(experiment_id=exp.experiment_id), metadata=md)).info.run_id
    edge = pb.Metric(key="m", value=float("-inf"), step=2**63 - 1, timestamp_ms=-(2**63))
    await s.LogBatch(pb.LogBatchRequest(run_id=run, metrics=[edge]), metadata=md)
    history = await s.GetMetricHistory(pb.GetMetricHistoryRequest(run_id=run, metric_key="m"), metadata=md)
    assert [(m.step, m.timestamp_ms, m.value) for m in history.metrics] == [(2**63 - 1, -(2**63), float("-inf"))]
    body = {"run_id": run, "metrics": [{"key": "m", "value": 1, "step": 2**70, "timestamp": 1}]}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{registry.http_url}/api/2.0/mlflow/runs/log-batch",
            json=body,
            headers={"Authorization": "Bearer tok-admin"},
        ) as reply:
            payload = await reply.json()
    assert reply.status == 400 and payload["error_code"] == "INVALID_PARAMETER_VALUE" and "64-bit" in payload["message"]
    history = await s.GetMetricHistory(pb.GetMetricHistoryRequest(run_id=run, metric_key="m"), metadata=md)
    assert len(history.metrics) == 1
