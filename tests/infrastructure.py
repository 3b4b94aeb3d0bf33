"""Real Kafka and PostgreSQL for the tests, behind one API.

When a Docker engine answers, testcontainers starts the official Kafka image
and a pgvector PostgreSQL image; otherwise the project's own scripts start the
native broker (infra/kafka/kafka.sh) and the embedded PostgreSQL
(infra/postgres/postgres.py), exactly as `make up` does. Either way the tests
get a bootstrap address and a DSN. Infrastructure that was already running is
reused and left running; what a test session started, it stops.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from services.common import kafka_admin, topics

ROOT = Path(__file__).resolve().parents[1]
KAFKA_SCRIPT = ROOT / "infra" / "kafka" / "kafka.sh"
POSTGRES_SCRIPT = ROOT / "infra" / "postgres" / "postgres.py"

KAFKA_IMAGE = "apache/kafka:4.1.1"
PGVECTOR_IMAGE = "pgvector/pgvector:pg17"


@dataclass
class Infra:
    """A started component and how to stop it (a no-op for one that was already running)."""

    address: str
    how: str
    _stop: Callable[[], None] = field(default=lambda: None, repr=False)

    def stop(self) -> None:
        self._stop()


def docker_engine_answers() -> bool:
    if os.environ.get("TESSERA_TEST_INFRA", "auto") == "native" or not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _kafka_answers(bootstrap: str) -> bool:
    try:
        kafka_admin.ping(bootstrap, timeout=3)
        return True
    except Exception:  # noqa: BLE001 - any failure means "not there"
        return False


def start_kafka() -> Infra:
    if explicit := os.environ.get("TESSERA_KAFKA_BOOTSTRAP"):
        kafka_admin.ensure_topics(explicit, topics.all_topics())
        return Infra(explicit, "given by TESSERA_KAFKA_BOOTSTRAP")
    if docker_engine_answers():
        from testcontainers.kafka import KafkaContainer

        container = KafkaContainer(KAFKA_IMAGE).with_kraft()
        container.start()
        bootstrap = container.get_bootstrap_server()
        kafka_admin.ensure_topics(bootstrap, topics.all_topics())
        return Infra(bootstrap, "testcontainers", container.stop)
    bootstrap = f"127.0.0.1:{os.environ.get('TESSERA_KAFKA_PORT', '9092')}"
    was_running = _kafka_answers(bootstrap)
    subprocess.run(["bash", str(KAFKA_SCRIPT), "start"], check=True, env=_script_env())
    if was_running:
        return Infra(bootstrap, "native, already running")
    return Infra(bootstrap, "native", lambda: subprocess.run(["bash", str(KAFKA_SCRIPT), "stop"], check=False))


def start_postgres() -> Infra:
    if explicit := os.environ.get("TESSERA_PG_DSN"):
        with psycopg.connect(explicit, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        return Infra(explicit, "given by TESSERA_PG_DSN")
    if docker_engine_answers():
        from testcontainers.postgres import PostgresContainer

        container = PostgresContainer(PGVECTOR_IMAGE, driver=None)
        container.start()
        dsn = container.get_connection_url()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        return Infra(dsn, "testcontainers", container.stop)
    status = subprocess.run([sys.executable, str(POSTGRES_SCRIPT), "status"], capture_output=True)
    was_running = status.returncode == 0
    subprocess.run([sys.executable, str(POSTGRES_SCRIPT), "start"], check=True, env=_script_env())
    dsn = subprocess.run(
        [sys.executable, str(POSTGRES_SCRIPT), "dsn"], check=True, capture_output=True, text=True
    ).stdout.strip()
    if was_running:
        return Infra(dsn, "native, already running")
    return Infra(dsn, "native", lambda: subprocess.run([sys.executable, str(POSTGRES_SCRIPT), "stop"], check=False))


def _script_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TESSERA_PYTHON", sys.executable)
    return env
