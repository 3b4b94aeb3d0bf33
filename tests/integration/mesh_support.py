"""The whole mesh in one process, for the cross-service suites (authorization matrix, hostile inputs).

`running_mesh(...)` starts registry, monitoring, retrieval and serving (port 0,
a PostgreSQL schema each, unique Kafka topics and consumer groups for the run)
and stops them in reverse order; tests/e2e uses it too. The principals are the
deployment's: `admin` (superuser), `tessera-services` (the service principal
the services call each other with, not a superuser) and `mallory`, an ordinary
principal who is granted nothing; a suite may add principals of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc
from inference import grpc_service_pb2 as oip
from inference import grpc_service_pb2_grpc
from psycopg import sql
from tessera.monitoring.v1 import monitoring_pb2_grpc
from tessera.registry.v1 import registry_pb2 as rpb
from tessera.registry.v1 import registry_pb2_grpc
from tessera.retrieval.v1 import retrieval_pb2_grpc
from tessera.serving.v1 import serving_pb2_grpc

from services.common import kafka_admin
from services.common.auth import bearer
from services.common.config import load
from services.fixtures.registry_client import RegistryClient
from services.monitoring.app import MonitoringApp
from services.monitoring.settings import MonitoringSettings
from services.registry.app import RegistryApp
from services.registry.settings import RegistrySettings
from services.retrieval.app import RetrievalApp
from services.retrieval.settings import RetrievalSettings
from services.serving.app import ServingApp
from services.serving.settings import ServingSettings

SERVICE_PRINCIPAL = "tessera-services"
TOKENS = {"admin": "mesh-admin-token", SERVICE_PRINCIPAL: "mesh-service-token", "mallory": "mallory-token"}

# The Kafka topics each run gets, by role.
TOPIC_ROLES = ("registry", "requests", "responses", "payloads", "drift", "sync")


def as_(who: str) -> tuple[tuple[str, str], ...]:
    return bearer(TOKENS[who])


@dataclass
class Mesh:
    registry: RegistryApp
    serving: ServingApp
    monitoring: MonitoringApp
    retrieval: RetrievalApp
    admin: RegistryClient
    channels: dict[str, grpc.aio.Channel]
    topics: dict[str, str]
    groups: dict[str, str]
    kafka_bootstrap: str
    work: Path
    addresses: dict[str, str] = field(default_factory=dict)

    @property
    def registry_http(self) -> str:
        return f"http://127.0.0.1:{self.registry.http_port}"

    def registry_stub(self) -> registry_pb2_grpc.RegistryServiceStub:
        return registry_pb2_grpc.RegistryServiceStub(self.channels["registry"])

    def serving_stub(self) -> serving_pb2_grpc.ServingServiceStub:
        return serving_pb2_grpc.ServingServiceStub(self.channels["serving"])

    def oip_stub(self) -> grpc_service_pb2_grpc.GRPCInferenceServiceStub:
        return grpc_service_pb2_grpc.GRPCInferenceServiceStub(self.channels["serving"])

    def monitoring_stub(self) -> monitoring_pb2_grpc.MonitoringServiceStub:
        return monitoring_pb2_grpc.MonitoringServiceStub(self.channels["monitoring"])

    def retrieval_stub(self) -> retrieval_pb2_grpc.RetrievalServiceStub:
        return retrieval_pb2_grpc.RetrievalServiceStub(self.channels["retrieval"])

    async def grant_service_reads(self, catalog: str, schema: str, model: str) -> None:
        """What the service principal needs to fetch and serve a model, granted explicitly.

        A registry that gives service principals a fixed read role makes this redundant; one that
        does not (or a deployment without that role) needs exactly these grants.
        """
        await self.admin.grant(rpb.SECURABLE_TYPE_CATALOG, catalog, SERVICE_PRINCIPAL, [rpb.PRIVILEGE_USE_CATALOG])
        await self.admin.grant(rpb.SECURABLE_TYPE_SCHEMA, schema, SERVICE_PRINCIPAL, [rpb.PRIVILEGE_USE_SCHEMA])
        await self.admin.grant(rpb.SECURABLE_TYPE_REGISTERED_MODEL, model, SERVICE_PRINCIPAL, [rpb.PRIVILEGE_EXECUTE])


@contextlib.asynccontextmanager
async def running_mesh(
    pg_dsn: str,
    kafka_bootstrap: str,
    *,
    registry_http: bool = False,
    retrieval_sync: bool = False,
    serving_max_request_bytes: int | None = None,
    more_tokens: dict[str, str] | None = None,
) -> AsyncIterator[Mesh]:
    """more_tokens: further principal -> token pairs the services accept (plain users of a suite)."""
    u = uuid.uuid4().hex[:8]
    work = Path(tempfile.mkdtemp(prefix="tessera-mesh-"))
    topics = {role: f"test.mesh.{role}.{u}" for role in TOPIC_ROLES}
    groups = {
        "serving": f"mesh-serving-{u}",
        "monitoring": f"mesh-monitoring-{u}",
        "retrieval": f"mesh-retrieval-{u}",
    }
    kafka_admin.ensure_topics(kafka_bootstrap, [*topics.values(), *(t + ".dlq" for t in topics.values())], partitions=1)
    schemas = {name: f"{name}_mesh_{u}" for name in ("registry", "serving", "monitoring", "retrieval")}
    common = {
        "pg_dsn": pg_dsn,
        "kafka_bootstrap": kafka_bootstrap,
        "grpc_port": 0,
        "auth_tokens": ",".join(f"{token}={who}" for who, token in {**TOKENS, **(more_tokens or {})}.items()),
        "service_token": TOKENS[SERVICE_PRINCIPAL],
    }
    started: list = []
    channels: dict[str, grpc.aio.Channel] = {}
    admin: RegistryClient | None = None
    try:
        registry = RegistryApp(
            load(
                RegistrySettings,
                **common,
                registry_http_port=0 if registry_http else -1,
                registry_schema=schemas["registry"],
                registry_artifact_root=work / "artifacts",
                registry_events_topic=topics["registry"],
                registry_superusers=("admin",),
                registry_service_principals=(SERVICE_PRINCIPAL,),
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
                registry_address=registry_address,
                monitoring_schema=schemas["monitoring"],
                monitoring_payload_topic=topics["payloads"],
                monitoring_drift_topic=topics["drift"],
                monitoring_consumer_group=groups["monitoring"],
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
                retrieval_run_sync_consumer=retrieval_sync,
                retrieval_sync_topic=topics["sync"],
                retrieval_sync_group=groups["retrieval"],
                retrieval_authz="registry",
                retrieval_registry_events_topic=topics["registry"],
                registry_address=registry_address,
            ),
            serve_metrics=False,
        )
        await retrieval.start()
        started.append(retrieval)

        serving_limits = (
            {} if serving_max_request_bytes is None else {"serving_max_request_bytes": serving_max_request_bytes}
        )
        serving = ServingApp(
            load(
                ServingSettings,
                **common,
                serving_http_port=0,
                **serving_limits,
                registry_address=registry_address,
                serving_schema=schemas["serving"],
                serving_model_cache=work / "cache",
                serving_requests_topic=topics["requests"],
                serving_responses_topic=topics["responses"],
                serving_payload_topic=topics["payloads"],
                serving_registry_events_topic=topics["registry"],
                serving_consumer_group=groups["serving"],
                serving_max_model_len=1024,
                serving_max_num_seqs=16,
                serving_kv_cache_mib=128,
            ),
            serve_metrics=False,
        )
        await serving.start()
        started.append(serving)

        addresses = {
            "registry": registry_address,
            "serving": f"127.0.0.1:{serving.port}",
            "monitoring": f"127.0.0.1:{monitoring.port}",
            "retrieval": f"127.0.0.1:{retrieval.port}",
        }
        big = [("grpc.max_send_message_length", 64 * 2**20), ("grpc.max_receive_message_length", 64 * 2**20)]
        channels = {name: grpc.aio.insecure_channel(address, options=big) for name, address in addresses.items()}
        admin = RegistryClient(registry_address, TOKENS["admin"])
        yield Mesh(
            registry, serving, monitoring, retrieval, admin, channels, topics, groups, kafka_bootstrap, work, addresses
        )
    finally:
        for channel in channels.values():
            await channel.close()
        if admin is not None:
            await admin.channel.close()
        # Reverse start order: serving and retrieval still talk to the registry while they stop.
        for app in reversed(started):
            await app.stop()
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            for schema in schemas.values():
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        shutil.rmtree(work, ignore_errors=True)


async def eventually(check: Callable[[], Awaitable], timeout: float = 60.0, every: float = 0.3):
    """The check's last result once it is truthy or the time is up (the caller asserts on it)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(every)


def tabular_request(endpoint: str, request_id: str = "", features=(1.0, 2.0, 3.0, 4.0), category: int = 5):
    """An OIP request for the tabular test model (features FP32[1,4], category INT64[1])."""
    request = oip.ModelInferRequest(model_name=endpoint, id=request_id)
    request.inputs.add(name="features", datatype="FP32", shape=[1, 4])
    request.inputs.add(name="category", datatype="INT64", shape=[1])
    request.raw_input_contents.extend([struct.pack("<4f", *features), struct.pack("<q", category)])
    return request


async def health_check(channel: grpc.aio.Channel, timeout_s: float = 1.0) -> health_pb2.HealthCheckResponse:
    """grpc.health.v1 Check on the server as a whole, with a deadline."""
    stub = health_pb2_grpc.HealthStub(channel)
    return await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)


@dataclass
class ProbeFailure:
    at: float
    address: str
    what: str
    during: str = ""


class HealthWatch:
    """Runs tests/integration/health_prober.py against the mesh and attributes its failures to tests."""

    def __init__(self, addresses: dict[str, str]) -> None:
        self._names = {address: name for name, address in addresses.items()}
        repo = Path(__file__).resolve().parents[2]
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.health_prober", *addresses.values()],
            cwd=repo,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._lines: list[str] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._marks: list[tuple[float, str]] = []
        self.probes = 0

    def _read(self) -> None:
        for line in self._process.stdout:
            if line.startswith("READY"):
                self._ready.set()
            self._lines.append(line.rstrip("\n"))
        self._ready.set()

    def wait_ready(self, timeout: float = 30.0) -> None:
        if not self._ready.wait(timeout) or self._process.poll() is not None:
            raise RuntimeError(f"the health prober did not start: {self._lines}")

    def mark(self, what: str) -> None:
        """From now on, failures are attributed to `what` (a test's name)."""
        self._marks.append((time.time(), what))

    def failures(self) -> list[ProbeFailure]:
        found = []
        for line in list(self._lines):
            if not line.startswith("FAIL "):
                continue
            _, at, address, what = line.split(" ", 3)
            during = ""
            for since, name in self._marks:
                if since <= float(at):
                    during = name
            found.append(ProbeFailure(float(at), self._names.get(address, address), what, during))
        return found

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.stdin.close()
            self._process.wait(timeout=15)
        self._reader.join(timeout=5)
        for line in self._lines:
            if line.startswith("PROBES "):
                self.probes = int(line.split()[1])
