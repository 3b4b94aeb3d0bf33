"""What a job shows while it runs and after it ends: the training API's Prometheus endpoint and the stock
mlflow client reading the job's run, params, metric history, checkpoints and registered version."""

from __future__ import annotations

import asyncio
import contextlib
import os
import urllib.request

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tessera.training.v1 import training_pb2 as pb

from services.common.auth import bearer
from services.fixtures import capitals
from tests.integration.training.stack import ALICE

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402

pytestmark = pytest.mark.integration


async def _scrape(stack) -> dict[tuple[str, tuple], float]:
    """The training API's /metrics as {(name, sorted labels): value}. Off the event loop: the endpoint
    reads PostgreSQL through the loop's pool while it answers."""

    def get() -> str:
        with urllib.request.urlopen(stack.training_metrics_url, timeout=30) as reply:
            return reply.read().decode()

    text = await asyncio.to_thread(get)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _job_value(scraped: dict, name: str, job_id: str) -> float | None:
    return next((v for (n, labels), v in scraped.items() if n == name and ("job_id", job_id) in labels), None)


def _value(scraped: dict, name: str, **labels) -> float | None:
    return scraped.get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def mlflow_client(stack):
    """The stock client against the registry's MLflow REST API, as the submitter (runs are handed to her)."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_HTTP_REQUEST_MAX_RETRIES")}
    os.environ["MLFLOW_TRACKING_TOKEN"] = ALICE
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    yield MlflowClient(tracking_uri=stack.registry_http_url, registry_uri=stack.registry_http_url)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


async def _dataset(stack, unique: str) -> tuple[str, str]:
    dataset = await stack.create_dataset(f"observed_{unique}")
    return dataset, (await stack.upload(dataset, capitals.chat_rows())).version


async def test_a_running_job_shows_on_prometheus_and_in_its_live_mlflow_run(stack, unique, mlflow_client) -> None:
    dataset, version = await _dataset(stack, unique)
    spec = stack.spec(dataset, version, f"live_{unique}", steps=100_000, checkpoint_every_steps=3)
    job = await stack.training.SubmitJob(pb.SubmitJobRequest(spec=spec), metadata=bearer(ALICE))
    running = await stack.wait(job.job_id, until=lambda j: j.checkpoint_step >= 3 and j.run_id)
    # The stack runs one worker, busy with this job: a second job waits in the queue.
    assert sum(proc.poll() is None for proc in stack.workers.procs) == 1
    queued = await stack.training.SubmitJob(
        pb.SubmitJobRequest(spec=stack.spec(dataset, version, f"queued_{unique}")), metadata=bearer(ALICE)
    )
    try:
        scraped = await _scrape(stack)
        assert _value(scraped, "tessera_training_metrics_up") == 1.0
        assert _value(scraped, "tessera_training_jobs", state="RUNNING") >= 1
        assert _value(scraped, "tessera_training_jobs", state="QUEUED") >= 1
        assert _value(scraped, "tessera_training_queue_depth") >= 1
        assert _job_value(scraped, "tessera_training_job_running", job.job_id) == 1.0
        assert _job_value(scraped, "tessera_training_job_step", job.job_id) >= 3
        assert _job_value(scraped, "tessera_training_job_total_steps", job.job_id) == 100_000
        assert _job_value(scraped, "tessera_training_job_loss", job.job_id) > 0
        assert _job_value(scraped, "tessera_training_job_learning_rate", job.job_id) == pytest.approx(1e-3)
        assert _job_value(scraped, "tessera_training_job_tokens_per_second", job.job_id) > 0
        assert _job_value(scraped, "tessera_training_job_grad_norm", job.job_id) > 0
        assert _job_value(scraped, "tessera_training_job_checkpoint_seconds", job.job_id) > 0
        assert _job_value(scraped, "tessera_training_job_checkpoint_step", job.job_id) >= 3
        assert ("model", spec.register_to) in next(
            labels for (n, labels) in scraped if n == "tessera_training_job_loss" and ("job_id", job.job_id) in labels
        )

        # Live: the run's loss history grows while the job still runs.
        first = await asyncio.to_thread(mlflow_client.get_metric_history, running.run_id, "loss")
        assert first

        async def grew() -> list:
            while True:
                later = await asyncio.to_thread(mlflow_client.get_metric_history, running.run_id, "loss")
                if max(m.step for m in later) > max(m.step for m in first):
                    return later
                await asyncio.sleep(1)

        later = await asyncio.wait_for(grew(), 300)
        assert (await stack.training.GetJob(pb.GetJobRequest(job_id=job.job_id), metadata=bearer(ALICE))).state == (
            pb.JOB_STATE_RUNNING
        )
        assert (await asyncio.to_thread(mlflow_client.get_run, running.run_id)).info.status == "RUNNING"
        assert {m.step for m in first} <= {m.step for m in later}
    finally:
        for job_id in (queued.job_id, job.job_id):
            with contextlib.suppress(grpc.aio.AioRpcError):
                await stack.training.CancelJob(pb.CancelJobRequest(job_id=job_id), metadata=bearer(ALICE))
        await stack.wait(job.job_id)


async def test_the_stock_mlflow_client_reads_a_finished_jobs_run_and_version(stack, unique, mlflow_client) -> None:
    dataset, version = await _dataset(stack, unique)
    steps = 8
    spec = stack.spec(dataset, version, f"read_{unique}", steps=steps, checkpoint_every_steps=3, alias="candidate")
    job = await stack.training.SubmitJob(pb.SubmitJobRequest(spec=spec), metadata=bearer(ALICE))
    done = await stack.wait(job.job_id)
    assert done.state == pb.JOB_STATE_SUCCEEDED, done.error_message

    run = await asyncio.to_thread(mlflow_client.get_run, done.run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["steps"] == str(steps) and params["learning_rate"] == "0.001" and params["method"] == "FULL"
    assert params["train_dataset"] == dataset and params["train_version"] == version
    assert params["base_model"] == stack.base_model and int(params["train_tokens"]) > 0
    assert run.data.tags["tessera.training.job_id"] == job.job_id

    histories = {
        key: await asyncio.to_thread(mlflow_client.get_metric_history, done.run_id, key)
        for key in ("loss", "learning_rate", "tokens_per_s", "grad_norm")
    }
    for key, history in histories.items():
        assert sorted({m.step for m in history}) == list(range(1, steps + 1)), key
    losses = {m.step: m.value for m in histories["loss"]}
    assert losses[steps] < losses[1]
    assert all(m.value == pytest.approx(1e-3) for m in histories["learning_rate"])
    assert all(m.value > 0 for m in histories["tokens_per_s"])
    checkpoint_seconds = await asyncio.to_thread(mlflow_client.get_metric_history, done.run_id, "checkpoint_seconds")
    assert {m.step for m in checkpoint_seconds} == {3, 6}

    listed = {f.path for f in await asyncio.to_thread(mlflow_client.list_artifacts, done.run_id)}
    assert {"checkpoints", "model"} <= listed
    checkpoints = await asyncio.to_thread(mlflow_client.list_artifacts, done.run_id, "checkpoints")
    assert {f.path for f in checkpoints} >= {"checkpoints/step-00000003.pt", "checkpoints/step-00000006.pt"}
    assert all(f.file_size > 0 for f in checkpoints)
    model_files = {f.path for f in await asyncio.to_thread(mlflow_client.list_artifacts, done.run_id, "model")}
    assert {"model/config.json", "model/model.safetensors", "model/tokenizer.json"} <= model_files

    registered = await asyncio.to_thread(mlflow_client.get_model_version, spec.register_to, str(done.model_version))
    assert registered.run_id == done.run_id and registered.status == "READY"
    assert registered.source == f"runs:/{done.run_id}/model"
    by_alias = await asyncio.to_thread(mlflow_client.get_model_version_by_alias, spec.register_to, "candidate")
    assert by_alias.version == registered.version

    # After the job: the endpoint keeps its last figures (the same loss as the run's last step).
    scraped = await _scrape(stack)
    assert _job_value(scraped, "tessera_training_job_running", job.job_id) == 0.0
    assert _job_value(scraped, "tessera_training_job_step", job.job_id) == steps
    assert _job_value(scraped, "tessera_training_job_loss", job.job_id) == pytest.approx(losses[steps])
    assert _job_value(scraped, "tessera_training_job_checkpoint_seconds", job.job_id) == pytest.approx(
        max(checkpoint_seconds, key=lambda m: m.step).value
    )
    assert _value(scraped, "tessera_training_jobs", state="SUCCEEDED") >= 1
