"""Run the retrieval service as its own process, as in production (its own interpreter and GIL)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "bench-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServiceProcess:
    def __init__(self, dsn: str, schema: str, log_path: Path) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "TESSERA_PG_DSN": dsn,
            "TESSERA_GRPC_PORT": str(self.port),
            "TESSERA_METRICS_PORT": "0",
            "TESSERA_RETRIEVAL_SCHEMA": schema,
            "TESSERA_RETRIEVAL_AUTHZ": "none",
            "TESSERA_RETRIEVAL_RUN_SYNC_CONSUMER": "false",
            "TESSERA_AUTH_TOKENS": f"{TOKEN}=bench",
            "HF_HUB_OFFLINE": "1",
        }
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.retrieval"], cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"retrieval service exited with {self.process.returncode}; see {self._log.name}")
                try:
                    if (
                        stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                        == health_pb2.HealthCheckResponse.SERVING
                    ):
                        return
                except grpc.RpcError:
                    time.sleep(0.5)
        raise TimeoutError("retrieval service did not become ready")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()
