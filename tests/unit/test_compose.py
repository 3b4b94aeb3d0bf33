"""docker-compose.yml stays in step with the repo: it parses, its mounts exist, every service is in it."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_the_infrastructure_is_in_compose(compose):
    assert {"kafka", "topics", "postgres", "prometheus", "grafana"} <= set(compose["services"])
    assert compose["services"]["kafka"]["image"].startswith("apache/kafka:")
    assert compose["services"]["postgres"]["image"].startswith("pgvector/pgvector:")


def test_every_bind_mount_and_build_file_exists(compose):
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
        build = service.get("build")
        if build:
            assert (ROOT / build["context"] / build["dockerfile"]).exists(), name


def test_every_runnable_service_is_in_compose(compose):
    runnable = {p.parent.name for p in (ROOT / "services").glob("*/__main__.py")} - {"demo"}
    commands = {" ".join(map(str, s.get("command", []))) for s in compose["services"].values()}
    missing = sorted(n for n in runnable if not any(f"services.{n}" in c for c in commands))
    assert not missing, f"services without a docker-compose entry: {missing}"


@pytest.mark.skipif(
    not shutil.which("docker") or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="the docker compose plugin is not installed here",
)
def test_docker_compose_config_accepts_the_file():
    # The services refuse the public default tokens off loopback, so compose asks for tokens of one's own.
    tokens = {"TESSERA_AUTH_TOKENS": "a-token=admin,s-token=tessera-services", "TESSERA_SERVICE_TOKEN": "s-token"}
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        env={**os.environ, **tokens},
    )
    assert result.returncode == 0, result.stderr
