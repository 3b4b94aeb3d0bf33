"""Tessera services as real processes (`python -m services.<name>`) for the mesh tests.

The replica and tracing tests need what an in-process fixture cannot give: two
processes of one service in one consumer group, a process that can be SIGKILLed,
and one tracer provider (one `service.name`) per service. Each process gets its
own gRPC port and log file; replicas of a service share its schema, topics and
consumer group, exactly as `make up REPLICAS=2` runs them.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from confluent_kafka.admin import AdminClient
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN, SERVICE_TOKEN = "mesh-admin-token", "mesh-service-token"
USER_TOKENS = {"alice": "mesh-alice-token", "bob": "mesh-bob-token", "carol": "mesh-carol-token"}
TOKENS = ",".join(
    [f"{ADMIN_TOKEN}=admin", f"{SERVICE_TOKEN}=tessera-services", *(f"{t}={p}" for p, t in USER_TOKENS.items())]
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServiceProcess:
    """One replica of one service."""

    name: str
    replica: int
    env: dict[str, str]
    grpc_port: int
    log_path: Path
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", f"services.{self.name}"],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def wait_serving(self, timeout_s: float = 240.0) -> None:
        deadline = time.monotonic() + timeout_s
        async with grpc.aio.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                if not self.alive():
                    raise RuntimeError(f"{self} exited during start:\n{self.tail()}")
                try:
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.aio.AioRpcError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self} not SERVING after {timeout_s:.0f}s:\n{self.tail()}")
                await asyncio.sleep(0.5)

    def kill(self) -> None:
        """SIGKILL: no orderly shutdown, no consumer-group leave, no last commit."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout_s: float = 30.0) -> None:
        if not self.alive():
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __str__(self) -> str:
        return f"{self.name}[{self.replica}] on {self.address}"


def service_env(common: Mapping[str, str], own: Mapping[str, str]) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("TESSERA_") and not key.startswith("OTEL_")
    }
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "protos" / "gen" / "python")])
    env.update(common)
    env.update(own)
    return env


def common_env(kafka_bootstrap: str, pg_dsn: str, **extra: str) -> dict[str, str]:
    return {
        "TESSERA_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "TESSERA_PG_DSN": pg_dsn,
        "TESSERA_AUTH_TOKENS": TOKENS,
        "TESSERA_SERVICE_TOKEN": SERVICE_TOKEN,
        "TESSERA_METRICS_PORT": "0",
        "TESSERA_LOG_LEVEL": "INFO",
        **extra,
    }


def group_assignment(bootstrap: str, group_id: str) -> dict[str, set[tuple[str, int]]]:
    """Members of a consumer group and the partitions each holds, once the group is stable
    (empty while it rebalances: a joining member holds nothing yet)."""
    from confluent_kafka import ConsumerGroupState

    admin = AdminClient({"bootstrap.servers": bootstrap})
    description = admin.describe_consumer_groups([group_id])[group_id].result(timeout=10)
    if description.state != ConsumerGroupState.STABLE:
        return {}
    return {
        member.member_id: {(tp.topic, tp.partition) for tp in member.assignment.topic_partitions}
        for member in description.members
    }


@dataclass
class Mesh:
    """A registry, N serving and M monitoring processes on unique topics, schemas and groups."""

    kafka_bootstrap: str
    pg_dsn: str
    work: Path
    topics: dict[str, str]
    schemas: dict[str, str]
    groups: dict[str, str]
    common: dict[str, str]
    # Settings of the monitoring replicas only (e.g. TESSERA_MONITORING_AUTHZ).
    monitoring_env: dict[str, str]
    registry: ServiceProcess
    registry_http_port: int
    serving: list[ServiceProcess] = field(default_factory=list)
    monitoring: list[ServiceProcess] = field(default_factory=list)

    def processes(self) -> list[ServiceProcess]:
        return [*self.serving, *self.monitoring, self.registry]

    def serving_replica(self, replica: int) -> ServiceProcess:
        own = {
            "TESSERA_GRPC_PORT": str(free_port()),
            "TESSERA_REGISTRY_ADDRESS": self.registry.address,
            "TESSERA_SERVING_SCHEMA": self.schemas["serving"],
            "TESSERA_SERVING_MODEL_CACHE": str(self.work / f"serving-cache-{replica}"),
            "TESSERA_SERVING_REQUESTS_TOPIC": self.topics["requests"],
            "TESSERA_SERVING_RESPONSES_TOPIC": self.topics["responses"],
            "TESSERA_SERVING_PAYLOAD_TOPIC": self.topics["payloads"],
            "TESSERA_SERVING_REGISTRY_EVENTS_TOPIC": self.topics["registry"],
            "TESSERA_SERVING_CONSUMER_GROUP": self.groups["serving"],
            "TESSERA_SERVING_PRIVILEGE_CACHE_S": "2",
        }
        return self._process("serving", replica, own)

    def monitoring_replica(self, replica: int) -> ServiceProcess:
        own = {
            "TESSERA_GRPC_PORT": str(free_port()),
            "TESSERA_REGISTRY_ADDRESS": self.registry.address,
            "TESSERA_REGISTRY_EVENTS_TOPIC": self.topics["registry"],
            "TESSERA_MONITORING_SCHEMA": self.schemas["monitoring"],
            "TESSERA_MONITORING_PAYLOAD_TOPIC": self.topics["payloads"],
            "TESSERA_MONITORING_DRIFT_TOPIC": self.topics["drift"],
            "TESSERA_MONITORING_CONSUMER_GROUP": self.groups["monitoring"],
            "TESSERA_MONITORING_WINDOW_GRACE_S": "1",
            "TESSERA_MONITORING_IDLE_WATERMARK_S": "1",
            "TESSERA_MONITORING_EVALUATE_EVERY_S": "0.5",
            # Small batches: a replica killed mid-stream holds some of them uncommitted.
            "TESSERA_MONITORING_BATCH_SIZE": "50",
            **self.monitoring_env,
        }
        return self._process("monitoring", replica, own)

    def _process(self, name: str, replica: int, own: dict[str, str]) -> ServiceProcess:
        return ServiceProcess(
            name,
            replica,
            service_env(self.common, own),
            int(own["TESSERA_GRPC_PORT"]),
            self.work / "logs" / f"{name}-{replica}.log",
        )

    async def add(self, name: str, count: int = 1) -> list[ServiceProcess]:
        """Start `count` more replicas of serving or monitoring and wait until they serve."""
        group = self.serving if name == "serving" else self.monitoring
        made = [
            (self.serving_replica if name == "serving" else self.monitoring_replica)(len(group) + i)
            for i in range(count)
        ]
        for process in made:
            process.start()
        group.extend(made)
        await asyncio.gather(*(process.wait_serving() for process in made))
        return made

    def stop(self) -> None:
        for process in self.processes():
            process.stop()
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.pg_dsn, autocommit=True) as conn:
            for schema in self.schemas.values():
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


async def start_mesh(
    kafka_bootstrap: str,
    pg_dsn: str,
    work: Path,
    *,
    serving: int = 1,
    monitoring: int = 1,
    partitions: int = 4,
    extra_env: Mapping[str, str] | None = None,
    monitoring_env: Mapping[str, str] | None = None,
) -> Mesh:
    import uuid

    from services.common import kafka_admin

    u = uuid.uuid4().hex[:8]
    topics = {name: f"test.mesh.{name}.{u}" for name in ("registry", "requests", "responses", "payloads", "drift")}
    kafka_admin.ensure_topics(kafka_bootstrap, [topics["registry"], topics["registry"] + ".dlq"], partitions=1)
    spread = [topics[n] for n in ("requests", "responses", "payloads", "drift")]
    kafka_admin.ensure_topics(kafka_bootstrap, [*spread, *(t + ".dlq" for t in spread)], partitions=partitions)
    common = common_env(kafka_bootstrap, pg_dsn, **(extra_env or {}))
    http_port = free_port()
    registry = ServiceProcess(
        "registry",
        0,
        service_env(
            common,
            {
                "TESSERA_GRPC_PORT": str(free_port()),
                "TESSERA_REGISTRY_HTTP_PORT": str(http_port),
                "TESSERA_REGISTRY_SCHEMA": f"registry_mesh_{u}",
                "TESSERA_REGISTRY_ARTIFACT_ROOT": str(work / "artifacts"),
                "TESSERA_REGISTRY_EVENTS_TOPIC": topics["registry"],
            },
        ),
        0,
        work / "logs" / "registry-0.log",
    )
    registry.grpc_port = int(registry.env["TESSERA_GRPC_PORT"])
    mesh = Mesh(
        kafka_bootstrap=kafka_bootstrap,
        pg_dsn=pg_dsn,
        work=work,
        topics=topics,
        schemas={name: f"{name}_mesh_{u}" for name in ("registry", "serving", "monitoring")},
        groups={"serving": f"mesh-serving-{u}", "monitoring": f"mesh-monitoring-{u}"},
        common=common,
        monitoring_env=dict(monitoring_env or {}),
        registry=registry,
        registry_http_port=http_port,
    )
    try:
        registry.start()
        await registry.wait_serving()
        if serving:
            await mesh.add("serving", serving)
        if monitoring:
            await mesh.add("monitoring", monitoring)
    except BaseException:
        mesh.stop()
        raise
    return mesh


@dataclass
class TabularEndpoint:
    name: str
    model: str
    version: int


async def deploy_tabular(mesh: Mesh, serving: ServiceProcess, users: list[str]) -> TabularEndpoint:
    """Register the tabular test model, create an endpoint for it on `serving` (as admin, waiting
    until it is READY) and let `users` call it."""
    import uuid

    from tessera.registry.v1 import registry_pb2 as rpb
    from tessera.serving.v1 import serving_pb2 as spb
    from tessera.serving.v1 import serving_pb2_grpc

    from services.common.auth import bearer
    from services.fixtures.registry_client import RegistryClient
    from services.fixtures.tabular import build_tabular_model

    u = uuid.uuid4().hex[:8]
    client = RegistryClient(mesh.registry.address, ADMIN_TOKEN)
    try:
        catalog, schema = f"c{u}", "models"
        await client.ensure_schema(catalog, schema)
        model = f"{catalog}.{schema}.tabular"
        version = await client.register(model, build_tabular_model(mesh.work / f"tabular-{u}", 1.0))
        endpoint = f"tabular-{u}"
        async with grpc.aio.insecure_channel(serving.address) as channel:
            await serving_pb2_grpc.ServingServiceStub(channel).CreateEndpoint(
                spb.CreateEndpointRequest(
                    name=endpoint, served_models=[spb.ServedModel(model_name=model, version=version)], wait=True
                ),
                metadata=bearer(ADMIN_TOKEN),
                timeout=300,
            )
        for user in users:
            await client.grant(rpb.SECURABLE_TYPE_CATALOG, catalog, user, [rpb.PRIVILEGE_USE_CATALOG])
            await client.grant(rpb.SECURABLE_TYPE_SCHEMA, f"{catalog}.{schema}", user, [rpb.PRIVILEGE_USE_SCHEMA])
            await client.grant(rpb.SECURABLE_TYPE_REGISTERED_MODEL, model, user, [rpb.PRIVILEGE_EXECUTE])
            try:
                # Where serving registers its endpoints as securables, calling one takes EXECUTE on it.
                await client.grant(rpb.SECURABLE_TYPE_ENDPOINT, endpoint, user, [rpb.PRIVILEGE_EXECUTE])
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise
        return TabularEndpoint(endpoint, model, version)
    finally:
        await client.channel.close()


def tensor_request(endpoint: str, request_id: str):
    import struct

    from inference import grpc_service_pb2 as oip

    request = oip.ModelInferRequest(model_name=endpoint, id=request_id)
    request.inputs.add(name="features", datatype="FP32", shape=[1, 4])
    request.inputs.add(name="category", datatype="INT64", shape=[1])
    request.raw_input_contents.extend([struct.pack("<4f", 1, 2, 3, 4), struct.pack("<q", 7)])
    return request
