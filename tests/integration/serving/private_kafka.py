"""A private Kafka broker for tests that take Kafka down: the shared broker is never stopped.

A TCP proxy in front of the shared broker would not do: after the bootstrap
metadata, Kafka clients connect to the advertised listener (127.0.0.1:9092)
directly, around the proxy. So the test starts a broker of its own with
infra/kafka/kafka.sh on free ports and its own data folder, and stops and
starts that one.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from services.common import kafka_admin

ROOT = Path(__file__).resolve().parents[3]
KAFKA_SCRIPT = ROOT / "infra" / "kafka" / "kafka.sh"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PrivateKafka:
    def __init__(self) -> None:
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.data_dir = Path(tempfile.mkdtemp(prefix="private-kafka-"))
        self._env = {
            **os.environ,
            "TESSERA_KAFKA_PORT": str(self.port),
            "TESSERA_KAFKA_CONTROLLER_PORT": str(free_port()),
            "TESSERA_DATA_DIR": str(self.data_dir),
            "TESSERA_KAFKA_PARTITIONS": "1",
            "TESSERA_KAFKA_HEAP_OPTS": "-Xms128m -Xmx512m",
            "TESSERA_PYTHON": sys.executable,
        }

    def start(self) -> None:
        subprocess.run(["bash", str(KAFKA_SCRIPT), "start"], check=True, env=self._env, capture_output=True)

    def stop(self) -> None:
        subprocess.run(["bash", str(KAFKA_SCRIPT), "stop"], check=True, env=self._env, capture_output=True)

    def ensure_topics(self, *names: str) -> None:
        kafka_admin.ensure_topics(self.bootstrap, list(names), partitions=1)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
