"""The two servers under test, each its own process on loopback: Tessera's registry and a real `mlflow server`.

Both use the same PostgreSQL: Tessera in a schema of its own, MLflow in a
database of its own that the bench creates (and drops afterwards).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

BENCH_TOKEN = "registry-bench-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout_s: float, log) -> None:
    deadline, last = time.monotonic() + timeout_s, 0.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() - last > 5:
            log(f"waiting for {url} ...")
            last = time.monotonic()
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f} s")


@dataclass
class Server:
    proc: subprocess.Popen
    http_url: str
    grpc_port: int = 0
    cleanup: list = field(default_factory=list)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for step in self.cleanup:
            step()


def start_tessera(dsn: str, log) -> tuple[Server, str]:
    schema = f"registry_bench_{uuid.uuid4().hex[:8]}"
    grpc_port, http_port = free_port(), free_port()
    artifacts = tempfile.mkdtemp(prefix="registry-bench-")
    env = {
        **os.environ,
        "TESSERA_PG_DSN": dsn,
        "TESSERA_REGISTRY_SCHEMA": schema,
        "TESSERA_GRPC_PORT": str(grpc_port),
        "TESSERA_REGISTRY_HTTP_PORT": str(http_port),
        "TESSERA_METRICS_PORT": "0",
        "TESSERA_REGISTRY_ARTIFACT_ROOT": artifacts,
        "TESSERA_AUTH_TOKENS": f"{BENCH_TOKEN}=admin",
        "TESSERA_LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen([sys.executable, "-m", "services.registry"], env=env)
    server = Server(proc, f"http://127.0.0.1:{http_port}", grpc_port)
    server.cleanup.append(lambda: _drop_schema(dsn, schema))
    wait_http(server.http_url + "/health", proc, 60, log)
    return server, schema


def _drop_schema(dsn: str, schema: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def database_dsn(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def start_mlflow(dsn: str, log) -> tuple[Server, str]:
    database = f"mlflow_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    mlflow_dsn = database_dsn(dsn, database)
    backend = mlflow_dsn.replace("postgresql://", "postgresql+psycopg://", 1)
    port = free_port()
    artifacts = Path(tempfile.mkdtemp(prefix="mlflow-bench-"))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            backend,
            "--artifacts-destination",
            artifacts.as_uri(),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = Server(proc, f"http://127.0.0.1:{port}")
    server.cleanup.append(lambda: _drop_database(dsn, database))
    wait_http(server.http_url + "/health", proc, 180, log)
    return server, mlflow_dsn


def _drop_database(dsn: str, database: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
