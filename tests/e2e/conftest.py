"""The whole mesh in one process: registry, serving, monitoring and retrieval wired to each other.

Each service is started the way its own integration tests start it (port 0, a
PostgreSQL schema of its own, its own consumer groups), and they share unique
Kafka topics for this run, so the payload logs serving writes are the ones
monitoring reads, and the registry events serving follows are this registry's.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
import psycopg
import pytest_asyncio
from inference import grpc_service_pb2_grpc
from psycopg import sql
from tessera.monitoring.v1 import monitoring_pb2_grpc
from tessera.retrieval.v1 import retrieval_pb2_grpc
from tessera.serving.v1 import serving_pb2_grpc

from services.common import kafka_admin
from services.common.config import load
from services.monitoring.app import MonitoringApp
from services.monitoring.config import MonitoringSettings
from services.registry.app import RegistryApp
from services.registry.settings import RegistrySettings
from services.retrieval.app import RetrievalApp
from services.retrieval.settings import RetrievalSettings
from services.serving.app import ServingApp
from services.serving.settings import ServingSettings
from tests.integration.serving.models import RegistryClient

# admin is the registry's superuser and the token the services call each other with;
# alice, bob and carol are plain users whose rights come from grants made in the tests.
TOKENS = {"admin": "e2e-admin", "alice": "e2e-alice", "bob": "e2e-bob", "carol": "e2e-carol"}


@dataclass
class Mesh:
    registry: RegistryApp
    serving: ServingApp
    monitoring: MonitoringApp
    retrieval: RetrievalApp
    admin: RegistryClient
    channels: dict[str, grpc.aio.Channel]
    topics: dict[str, str]

    def serving_stub(self) -> serving_pb2_grpc.ServingServiceStub:
        return serving_pb2_grpc.ServingServiceStub(self.channels["serving"])

    def oip_stub(self) -> grpc_service_pb2_grpc.GRPCInferenceServiceStub:
        return grpc_service_pb2_grpc.GRPCInferenceServiceStub(self.channels["serving"])

    def monitoring_stub(self) -> monitoring_pb2_grpc.MonitoringServiceStub:
        return monitoring_pb2_grpc.MonitoringServiceStub(self.channels["monitoring"])

    def retrieval_stub(self) -> retrieval_pb2_grpc.RetrievalServiceStub:
        return retrieval_pb2_grpc.RetrievalServiceStub(self.channels["retrieval"])


@pytest_asyncio.fixture(scope="module")
async def mesh(pg_dsn: str, kafka_bootstrap: str):
    u = uuid.uuid4().hex[:8]
    work = Path(tempfile.mkdtemp(prefix="tessera-e2e-"))
    topics = {name: f"test.e2e.{name}.{u}" for name in ("registry", "requests", "responses", "payloads", "drift")}
    kafka_admin.ensure_topics(kafka_bootstrap, [*topics.values(), *(t + ".dlq" for t in topics.values())], partitions=1)
    schemas = {name: f"{name}_e2e_{u}" for name in ("registry", "serving", "monitoring", "retrieval")}
    common = {
        "pg_dsn": pg_dsn,
        "kafka_bootstrap": kafka_bootstrap,
        "grpc_port": 0,
        "auth_tokens": ",".join(f"{token}={who}" for who, token in TOKENS.items()),
        "service_token": TOKENS["admin"],
    }
    started: list = []
    try:
        registry = RegistryApp(
            load(
                RegistrySettings,
                **common,
                registry_http_port=-1,
                registry_schema=schemas["registry"],
                registry_artifact_root=work / "artifacts",
                registry_events_topic=topics["registry"],
            ),
            serve_metrics=False,
        )
        await registry.start()
        started.append(registry)
        registry_address = f"127.0.0.1:{registry.grpc_port}"

        monitoring = MonitoringApp(
            load(
                MonitoringSettings,
                **common,
                monitoring_schema=schemas["monitoring"],
                monitoring_payload_topic=topics["payloads"],
                monitoring_drift_topic=topics["drift"],
                monitoring_consumer_group=f"e2e-monitoring-{u}",
                monitoring_window_grace_s=1.0,
                monitoring_idle_watermark_s=1.0,
                monitoring_evaluate_every_s=0.2,
            ),
            serve_metrics=False,
        )
        await monitoring.start()
        started.append(monitoring)
        await monitoring.consumer.wait_assigned()

        retrieval = RetrievalApp(
            load(
                RetrievalSettings,
                **common,
                retrieval_schema=schemas["retrieval"],
                retrieval_run_sync_consumer=False,
                retrieval_authz="registry",
                retrieval_registry_events_topic=topics["registry"],
                registry_address=registry_address,
            ),
            serve_metrics=False,
        )
        await retrieval.start()
        started.append(retrieval)

        serving = ServingApp(
            load(
                ServingSettings,
                **common,
                registry_address=registry_address,
                serving_schema=schemas["serving"],
                serving_model_cache=work / "cache",
                serving_requests_topic=topics["requests"],
                serving_responses_topic=topics["responses"],
                serving_payload_topic=topics["payloads"],
                serving_registry_events_topic=topics["registry"],
                serving_consumer_group=f"e2e-serving-{u}",
                # A small engine for the tiny Llama, as serving's own tests run it.
                serving_max_model_len=1024,
                serving_max_num_seqs=16,
                serving_kv_cache_mib=128,
            ),
            serve_metrics=False,
        )
        await serving.start()
        started.append(serving)

        channels = {
            "serving": grpc.aio.insecure_channel(f"127.0.0.1:{serving.port}"),
            "monitoring": grpc.aio.insecure_channel(f"127.0.0.1:{monitoring.port}"),
            "retrieval": grpc.aio.insecure_channel(f"127.0.0.1:{retrieval.port}"),
        }
        admin = RegistryClient(registry_address, TOKENS["admin"])
        yield Mesh(registry, serving, monitoring, retrieval, admin, channels, topics)
        for channel in channels.values():
            await channel.close()
        await admin.channel.close()
    finally:
        # Stop in reverse start order: serving and retrieval still talk to the registry while they stop.
        for app in reversed(started):
            await app.stop()
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            for schema in schemas.values():
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        shutil.rmtree(work, ignore_errors=True)
