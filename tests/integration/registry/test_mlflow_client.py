"""The stock mlflow client (from PyPI) against Tessera's MLflow REST API, unchanged.

The client is synchronous, so each scenario runs in a worker thread while the
registry serves on the test's event loop.
"""

from __future__ import annotations

import asyncio
import math
import os
import uuid
from pathlib import Path

import pandas
import pytest
import requests
from tessera.registry.v1 import registry_pb2 as pb

from tests.integration.registry.conftest import TOKENS, as_

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402
from mlflow.exceptions import MlflowException, RestException  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def mlflow_env(registry):
    saved = {
        k: os.environ.get(k)
        for k in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN", "MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    }
    os.environ["MLFLOW_TRACKING_URI"] = registry.http_url
    os.environ["MLFLOW_TRACKING_TOKEN"] = TOKENS["admin"]
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    mlflow.set_tracking_uri(registry.http_url)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _tracking_scenario(tmp: Path, experiment: str) -> dict:
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name="first") as run:
        mlflow.log_param("lr", 0.01)
        mlflow.log_params({"layers": 3, "act": "relu"})
        for step in range(5):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        mlflow.log_metrics({"acc": 0.9, "weird": float("nan"), "big": float("inf")}, step=1)
        mlflow.set_tag("team", "search")
        (tmp / "notes.txt").write_text("hello from tessera")
        mlflow.log_artifact(str(tmp / "notes.txt"))
        (tmp / "folder").mkdir()
        (tmp / "folder" / "a.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 7))
        mlflow.log_artifacts(str(tmp / "folder"), artifact_path="blobs")
        dataset = mlflow.data.from_pandas(
            pandas.DataFrame({"x": [1, 2, 3]}), source="s3://bucket/train.csv", name="train"
        )
        mlflow.log_input(dataset, context="training")
    client = MlflowClient()
    found = mlflow.search_runs(experiment_names=[experiment], filter_string="metrics.loss < 0.5 and params.lr = '0.01'")
    history = client.get_metric_history(run.info.run_id, "loss")
    listed = sorted(f.path for f in client.list_artifacts(run.info.run_id))
    downloaded = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(tmp / "down")))
    return {
        "run": client.get_run(run.info.run_id),
        "found": list(found["run_id"]),
        "history": [(m.step, m.value) for m in history],
        "listed": listed,
        "notes": (downloaded / "notes.txt").read_text(),
        "blob_equal": (downloaded / "blobs" / "a.bin").read_bytes() == (tmp / "folder" / "a.bin").read_bytes(),
    }


async def test_tracking_with_the_stock_client(registry, tmp_path):
    experiment = f"mlflow-exp-{uuid.uuid4().hex[:8]}"
    out = await asyncio.to_thread(_tracking_scenario, tmp_path, experiment)
    run = out["run"]
    assert run.data.params == {"lr": "0.01", "layers": "3", "act": "relu"}
    assert run.data.metrics["loss"] == pytest.approx(0.2) and math.isnan(run.data.metrics["weird"])
    assert run.data.metrics["big"] == float("inf")
    assert run.data.tags["team"] == "search" and run.info.status == "FINISHED" and run.info.end_time
    assert out["found"] == [run.info.run_id]
    assert out["history"] == [(i, pytest.approx(1.0 / (i + 1))) for i in range(5)]
    assert out["listed"] == ["blobs", "notes.txt"]
    assert out["notes"] == "hello from tessera" and out["blob_equal"]
    # The same run through gRPC: one core behind both front ends.
    got = await registry.stub.GetRun(pb.GetRunRequest(run_id=run.info.run_id), metadata=as_("admin"))
    assert {p.key for p in got.data.params} == {"lr", "layers", "act"}
    # The dataset the run read is lineage upstream of it.
    lineage = await registry.stub.GetLineage(
        pb.GetLineageRequest(
            node=pb.LineageNode(type="RUN", name=run.info.run_id), direction=pb.LINEAGE_DIRECTION_UPSTREAM
        ),
        metadata=as_("admin"),
    )
    assert [n.type for n in lineage.nodes] == ["DATASET", "RUN"] and lineage.nodes[0].name.startswith("train@")


class _Doubler(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return [x * 2 for x in model_input]


def _registry_scenario(tmp: Path, experiment: str, model: str) -> dict:
    mlflow.set_experiment(experiment)
    client = MlflowClient()
    with mlflow.start_run() as run:
        (tmp / "weights.txt").write_text("w")
        mlflow.log_artifact(str(tmp / "weights.txt"), artifact_path="model")
    client.create_registered_model(model, description="first")
    v1 = client.create_model_version(model, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    ready = client.get_model_version(model, v1.version)
    client.set_registered_model_alias(model, "champion", v1.version)
    by_alias = client.get_model_version_by_alias(model, "champion")
    # MLflow 3: log_model creates a logged model, uploads its files, registers a version.
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="doubler", python_model=_Doubler(), registered_model_name=model, pip_requirements=[]
        )
    v2 = client.get_model_version(model, "2")
    loaded = mlflow.pyfunc.load_model(f"models:/{model}/2")
    searched = [m.name for m in client.search_registered_models(filter_string=f"name = '{model}'")]
    liked = [m.name for m in client.search_registered_models(filter_string=f"name LIKE '%{model[-6:]}%'")]
    versions = sorted(v.version for v in client.search_model_versions(f"name = '{model}'"))
    try:
        client.get_model_version_by_alias(model, "missing")
        missing = None
    except MlflowException as exc:
        missing = exc.error_code
    return {
        "v1": v1,
        "ready": ready,
        "by_alias": by_alias,
        "v2": v2,
        "info": info,
        "prediction": list(loaded.predict([1, 2])),
        "searched": searched,
        "liked": liked,
        "versions": versions,
        "missing": missing,
    }


async def test_registration_aliases_and_log_model_with_the_stock_client(registry, tmp_path):
    experiment, model = f"mlflow-reg-{uuid.uuid4().hex[:8]}", f"model_{uuid.uuid4().hex[:8]}"
    out = await asyncio.to_thread(_registry_scenario, tmp_path, experiment, model)
    assert out["ready"].status == "READY" and out["by_alias"].version == out["v1"].version == "1"
    assert out["v2"].status == "READY" and out["v2"].source.endswith(out["info"].model_id)
    assert out["prediction"] == [2, 4]
    assert out["missing"] == "RESOURCE_DOES_NOT_EXIST"
    assert out["searched"] == out["liked"] == [model] and out["versions"] == ["1", "2"]
    # The version's files were copied into the registry; gRPC sees the model under the default schema.
    full = f"main.default.{model}"
    version = await registry.stub.GetModelVersionByAlias(
        pb.GetModelVersionByAliasRequest(model_name=full, alias="champion"), metadata=as_("admin")
    )
    assert version.status == pb.MODEL_VERSION_STATUS_READY
    chunks = [
        c
        async for c in registry.stub.DownloadArtifacts(
            pb.DownloadArtifactsRequest(
                target=pb.ArtifactTarget(model_version=pb.ModelVersionRef(model_name=full, version=1))
            ),
            metadata=as_("admin"),
        )
    ]
    assert [(c.path, c.data) for c in chunks] == [("weights.txt", b"w")]
    v2 = await registry.stub.GetModelVersion(
        pb.GetModelVersionRequest(model_name=full, version=2), metadata=as_("admin")
    )
    assert v2.model_id == out["info"].model_id
    lineage = await registry.stub.GetLineage(
        pb.GetLineageRequest(
            node=pb.LineageNode(type="MODEL_VERSION", name=f"{full}/1"), direction=pb.LINEAGE_DIRECTION_UPSTREAM
        ),
        metadata=as_("admin"),
    )
    assert [n.type for n in lineage.nodes] == ["MODEL_VERSION", "RUN"]


def _default_experiment_scenario() -> tuple[str, str]:
    mlflow.set_experiment(experiment_id="0")
    with mlflow.start_run() as run:
        mlflow.log_metric("m", 1.0)
    return MlflowClient().get_experiment("0").name, run.info.experiment_id


async def test_runs_without_an_experiment_go_to_default_experiment_zero(registry):
    assert await asyncio.to_thread(_default_experiment_scenario) == ("Default", "0")


def _errors_scenario(experiment: str) -> dict:
    client = MlflowClient()
    exp_id = client.create_experiment(experiment)
    run = client.create_run(exp_id)
    client.log_param(run.info.run_id, "p", "1")
    codes = {}
    for name, call in {
        "changed_param": lambda: client.log_param(run.info.run_id, "p", "2"),
        "unknown_run": lambda: client.get_run("0" * 32),
        "duplicate_experiment": lambda: client.create_experiment(experiment),
        "bad_filter": lambda: client.search_runs([exp_id], filter_string="metrics.loss <<< 1"),
        "bad_model_name": lambda: client.create_registered_model("a.b"),
    }.items():
        try:
            call()
            codes[name] = None
        except RestException as exc:
            codes[name] = exc.error_code
        except MlflowException as exc:
            codes[name] = exc.error_code
    # The client splits big batches itself; a raw request shows the server's own limit.
    reply = requests.post(
        f"{mlflow.get_tracking_uri()}/api/2.0/mlflow/runs/log-batch",
        json={
            "run_id": run.info.run_id,
            "metrics": [{"key": "m", "value": 1, "step": i, "timestamp": 1} for i in range(1001)],
        },
        headers={"Authorization": f"Bearer {TOKENS['admin']}"},
        timeout=30,
    )
    codes["oversized_batch"] = (reply.status_code, reply.json()["error_code"], "1001" in reply.json()["message"])
    return codes


async def test_errors_come_back_as_mlflow_error_codes(registry):
    codes = await asyncio.to_thread(_errors_scenario, f"mlflow-err-{uuid.uuid4().hex[:8]}")
    assert codes == {
        "changed_param": "INVALID_PARAMETER_VALUE",
        "unknown_run": "RESOURCE_DOES_NOT_EXIST",
        "duplicate_experiment": "RESOURCE_ALREADY_EXISTS",
        "bad_filter": "INVALID_PARAMETER_VALUE",
        "oversized_batch": (400, "INVALID_PARAMETER_VALUE", True),
        "bad_model_name": "INVALID_PARAMETER_VALUE",
    }
