"""One registry, one training API and training worker processes for the training tests."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import grpc
import pytest_asyncio
from tessera.registry.v1 import registry_pb2 as rpb

from services.common import kafka_admin
from services.common.config import load
from services.fixtures.registry_client import RegistryClient
from services.fixtures.tiny_llama import build_tiny_llama
from services.monitoring.app import MonitoringApp
from services.monitoring.settings import MonitoringSettings
from services.registry.app import RegistryApp
from services.registry.settings import RegistrySettings
from services.training.app import TrainingApp
from services.training.settings import TrainingSettings
from tests.integration.training.stack import ADMIN, REPO, SERVICE, TOKENS, Stack, Workers


# Package scope: its engines and consumers stop when this package's tests end, not weigh on the next ones.
@pytest_asyncio.fixture(scope="package")
async def stack(kafka_bootstrap: str, pg_dsn: str):
    u = uuid.uuid4().hex[:8]
    work = Path(tempfile.mkdtemp(prefix="training-test-"))
    topics = {name: f"test.training.{name}.{u}" for name in ("registry", "jobs", "events", "payloads", "drift")}
    kafka_admin.ensure_topics(kafka_bootstrap, [*topics.values(), *(t + ".dlq" for t in topics.values())], partitions=1)
    registry = RegistryApp(
        load(
            RegistrySettings,
            grpc_port=0,
            # The MLflow REST API, for the stock mlflow client reading jobs' runs.
            registry_http_port=0,
            kafka_bootstrap=kafka_bootstrap,
            pg_dsn=pg_dsn,
            auth_tokens=TOKENS,
            registry_schema=f"registry_tt{u}",
            registry_artifact_root=work / "artifacts",
            registry_events_topic=topics["registry"],
            registry_service_principals=("training-svc",),
        ),
        serve_metrics=False,
    )
    await registry.start()
    registry_address = f"127.0.0.1:{registry.grpc_port}"
    client = RegistryClient(registry_address, ADMIN)
    catalog, schema = f"c{u}", "ml"
    await client.ensure_schema(catalog, schema)
    base = f"{catalog}.{schema}.tiny_llama"
    await client.register(base, build_tiny_llama())
    # alice: a data scientist who may use the schema, create models and datasets and run the base model.
    await client.grant(rpb.SECURABLE_TYPE_CATALOG, catalog, "alice", [rpb.PRIVILEGE_USE_CATALOG])
    await client.grant(
        rpb.SECURABLE_TYPE_SCHEMA,
        f"{catalog}.{schema}",
        "alice",
        [rpb.PRIVILEGE_USE_SCHEMA, rpb.PRIVILEGE_CREATE_MODEL],
    )
    await client.grant(rpb.SECURABLE_TYPE_REGISTERED_MODEL, base, "alice", [rpb.PRIVILEGE_EXECUTE])
    # bob may reach the schema and nothing in it.
    await client.grant(rpb.SECURABLE_TYPE_CATALOG, catalog, "bob", [rpb.PRIVILEGE_USE_CATALOG])
    await client.grant(rpb.SECURABLE_TYPE_SCHEMA, f"{catalog}.{schema}", "bob", [rpb.PRIVILEGE_USE_SCHEMA])

    # Monitoring holds the inference tables datasets are made from (read through its API).
    monitoring = MonitoringApp(
        load(
            MonitoringSettings,
            environ={"TESSERA_REGISTRY_ADDRESS": registry_address, "TESSERA_SERVICE_TOKEN": SERVICE},
            pg_dsn=pg_dsn,
            kafka_bootstrap=kafka_bootstrap,
            grpc_port=0,
            auth_tokens=TOKENS,
            monitoring_schema=f"monitoring_tt{u}",
            monitoring_payload_topic=topics["payloads"],
            monitoring_drift_topic=topics["drift"],
            monitoring_consumer_group=f"training-test-monitoring-{u}",
        ),
        serve_metrics=False,
    )
    await monitoring.start()
    env = {
        "TESSERA_MONITORING_ADDRESS": f"127.0.0.1:{monitoring.port}",
        "TESSERA_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "TESSERA_PG_DSN": pg_dsn,
        "TESSERA_AUTH_TOKENS": TOKENS,
        "TESSERA_SERVICE_TOKEN": SERVICE,
        "TESSERA_TRAINING_RUN_AS_TOKEN": ADMIN,
        "TESSERA_REGISTRY_ADDRESS": registry_address,
        "TESSERA_TRAINING_SCHEMA": f"training_t{u}",
        "TESSERA_TRAINING_ROOT": str(work / "training"),
        "TESSERA_TRAINING_JOBS_TOPIC": topics["jobs"],
        "TESSERA_TRAINING_EVENTS_TOPIC": topics["events"],
        "TESSERA_TRAINING_CONSUMER_GROUP": f"training-test-{u}",
        "TESSERA_TRAINING_LEASE_S": "6",
        "TESSERA_TRAINING_HEARTBEAT_S": "1",
        "TESSERA_TRAINING_POLL_S": "1",
        "TESSERA_TRAINING_THREADS": "1",
        "TESSERA_TRAINING_LOG_EVERY_S": "2",
    }
    settings = load(TrainingSettings, environ=env, grpc_port=0, metrics_port=0)
    training = TrainingApp(settings, registry_events_topic=topics["registry"])
    await training.start()
    worker_env = {
        **os.environ,
        **env,
        "PYTHONPATH": f"{REPO}:{REPO / 'protos' / 'gen' / 'python'}",
        "TESSERA_METRICS_PORT": "0",
    }
    workers = Workers(worker_env, work)
    workers.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{training.port}")
    yield Stack(
        registry_address=registry_address,
        training_address=f"127.0.0.1:{training.port}",
        catalog=catalog,
        schema=schema,
        base_model=base,
        workers=workers,
        channel=channel,
        registry_channel=client.channel,
        root=work / "training",
        payload_topic=topics["payloads"],
        kafka_bootstrap=kafka_bootstrap,
        monitoring_address=f"127.0.0.1:{monitoring.port}",
        registry_http_url=f"http://127.0.0.1:{registry.http_port}",
        training_metrics_url=f"http://127.0.0.1:{training.metrics_port}/metrics",
    )
    workers.stop_all()
    await channel.close()
    await training.stop()
    await monitoring.stop()
    await client.channel.close()
    await registry.stop()
    shutil.rmtree(work, ignore_errors=True)
