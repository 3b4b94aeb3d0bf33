"""The registry's artifact scenarios (gRPC streams, the MLflow artifact proxy with the stock client, copies
of run folders into model versions) run again with the artifacts in a real MinIO instead of local disk."""

from __future__ import annotations

import uuid

import grpc
import psycopg
import pytest
from psycopg import sql
from tessera.registry.v1 import registry_pb2 as pb
from tessera.registry.v1 import registry_pb2_grpc

from services.common import kafka_admin
from services.common.config import load
from services.registry.app import RegistryApp
from services.registry.artifact_store import S3ArtifactStore
from services.registry.settings import RegistrySettings
from tests.integration.registry import minio_server
from tests.integration.registry.conftest import TOKENS, as_

# The same scenarios as on local disk: collected here, they use this module's `registry` (on MinIO).
from tests.integration.registry.test_mlflow_client import (  # noqa: F401
    mlflow_env,
    test_registration_aliases_and_log_model_with_the_stock_client,
    test_tracking_with_the_stock_client,
)
from tests.integration.registry.test_models_artifacts_lineage import (  # noqa: F401
    test_a_big_model_folder_moves_in_chunks_both_ways,
    test_a_version_whose_source_cannot_be_copied_ends_failed_with_the_reason,
)

pytestmark = pytest.mark.integration

minio = pytest.fixture(scope="module")(minio_server.minio_fixture)


@pytest.fixture(scope="module")
async def registry(pg_dsn, kafka_bootstrap, minio):
    suffix = uuid.uuid4().hex[:10]
    topic = f"test.registry.events.{suffix}"
    kafka_admin.ensure_topics(kafka_bootstrap, [topic], partitions=1)
    schema = f"registry_t_{suffix}"
    settings = load(
        RegistrySettings,
        pg_dsn=pg_dsn,
        kafka_bootstrap=kafka_bootstrap,
        grpc_port=0,
        registry_http_port=0,
        registry_schema=schema,
        registry_events_topic=topic,
        registry_service_principals=("serving-svc",),
        auth_tokens=",".join(f"{t}={p}" for p, t in TOKENS.items()),
        **minio_server.s3_settings(minio, f"registry-{suffix}"),
    )
    app = RegistryApp(settings, serve_metrics=False)
    await app.start()
    assert isinstance(app.registry.ctx.files, S3ArtifactStore)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}")
    app.stub = registry_pb2_grpc.RegistryServiceStub(channel)
    app.topic = topic
    app.http_url = f"http://127.0.0.1:{app.http_port}"
    yield app
    await channel.close()
    await app.stop()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


async def test_a_version_made_from_a_run_is_copied_inside_the_bucket(registry, schema_of):
    import asyncio

    s, md = registry.stub, as_("admin")
    exp = await s.CreateExperiment(
        pb.CreateExperimentRequest(name=f"copy-{schema_of}", schema_full_name=schema_of), metadata=md
    )
    run = (await s.CreateRun(pb.CreateRunRequest(experiment_id=exp.experiment_id), metadata=md)).info.run_id
    target = pb.ArtifactTarget(run_id=run)

    async def upload():
        yield pb.UploadArtifactsRequest(target=target)
        yield pb.UploadArtifactsRequest(chunk=pb.ArtifactChunk(path="model/model.pt", data=b"weights", offset=0))

    await s.UploadArtifacts(upload(), metadata=md)
    model = f"{schema_of}.copied"
    await s.CreateRegisteredModel(pb.CreateRegisteredModelRequest(full_name=model), metadata=md)
    await s.CreateModelVersion(
        pb.CreateModelVersionRequest(model_name=model, source=f"runs:/{run}/model", run_id=run), metadata=md
    )
    for _ in range(200):
        version = await s.GetModelVersion(pb.GetModelVersionRequest(model_name=model, version=1), metadata=md)
        if version.status != pb.MODEL_VERSION_STATUS_PENDING_REGISTRATION:
            break
        await asyncio.sleep(0.05)
    assert version.status == pb.MODEL_VERSION_STATUS_READY, version.status_message
    assert version.storage_location.startswith(f"s3://{minio_server.BUCKET}/registry-")
    version_target = pb.ArtifactTarget(model_version=pb.ModelVersionRef(model_name=model, version=1))
    chunks = [c async for c in s.DownloadArtifacts(pb.DownloadArtifactsRequest(target=version_target), metadata=md)]
    assert [(c.path, c.data) for c in chunks] == [("model.pt", b"weights")]


async def test_a_source_in_another_bucket_is_refused(registry, schema_of):
    s, md = registry.stub, as_("admin")
    model = f"{schema_of}.elsewhere"
    await s.CreateRegisteredModel(pb.CreateRegisteredModelRequest(full_name=model), metadata=md)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await s.CreateModelVersion(
            pb.CreateModelVersionRequest(model_name=model, source="s3://someone-elses-bucket/model"), metadata=md
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
