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
TOKENS = f"{ADMIN_TOKEN}=admin,{SERVICE_TOKEN}=tessera-services"


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
    """Members of a consumer group (by client host and id) and the partitions each holds now."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    description = admin.describe_consumer_groups([group_id])[group_id].result(timeout=10)
    return {
        member.member_id: {(tp.topic, tp.partition) for tp in member.assignment.topic_partitions}
        for member in description.members
    }
