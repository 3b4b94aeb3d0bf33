"""docker-compose.yml stays in step with the repo: it parses, its mounts exist, every service is in it,
every service is health-checked and waits for what it needs to be healthy."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infra.prometheus import targets as prometheus_targets

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
GPU_OVERRIDE = ROOT / "infra" / "docker" / "docker-compose.gpu.yml"
TESSERA_SERVICES = ("registry", "serving", "retrieval", "monitoring", "training", "evaluation")
# Long-running Tessera processes without a gRPC port: probed by the alive file they touch from their loop.
PORTLESS_WORKERS = {"training-worker": "services.training.worker"}

pytestmark = pytest.mark.unit


def tool(name: str) -> str | None:
    """A binary from the project's venv (the test extra installs it there) or from PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def compose_command() -> list[str] | None:
    """`docker compose` (the plugin) or the standalone `docker-compose` v2 binary of the test extra."""
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    standalone = tool("docker-compose")
    return [standalone] if standalone else None


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


def test_every_long_running_service_has_a_health_check(compose):
    # `topics` runs once and exits: the others wait for it to complete, not to be healthy.
    unchecked = sorted(n for n, s in compose["services"].items() if n != "topics" and not s.get("healthcheck"))
    assert not unchecked, f"services without a healthcheck: {unchecked}"


def test_tessera_services_probe_their_own_grpc_port(compose):
    for found in prometheus_targets.services():
        service = compose["services"][found.name]
        assert service["healthcheck"]["test"][-1] == str(found.grpc_port), found.name
        assert f"127.0.0.1:{found.grpc_port}:{found.grpc_port}" in service["ports"], found.name


def test_portless_workers_are_probed_by_the_alive_file_they_touch(compose):
    for name, module in PORTLESS_WORKERS.items():
        service = compose["services"][name]
        assert service["command"] == ["python", "-m", module], name
        assert "ports" not in service, f"{name} has no port to publish"
        test = service["healthcheck"]["test"]
        assert test[:4] == ["CMD", "python", "infra/docker/healthcheck.py", "--alive-file"], name
        # The file the check reads is the one the worker touches, and it is not on the shared volume.
        assert service["environment"]["TESSERA_TRAINING_WORKER_ALIVE_FILE"] == test[4], name
        assert not test[4].startswith("/var/lib/tessera"), f"{name}: one live replica would hide a dead one"
        assert float(test[5]) > 0, name


def test_dependencies_wait_for_health_not_for_start(compose):
    for name, service in compose["services"].items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on as a list only waits for the start"
        for other, rule in depends.items():
            expected = "service_completed_successfully" if other == "topics" else "service_healthy"
            assert rule["condition"] == expected, f"{name} -> {other}: {rule['condition']}"
    for name in TESSERA_SERVICES:
        if name != "registry":
            # They check grants with the registry from their first request on.
            assert "registry" in compose["services"][name]["depends_on"], name


def test_each_service_builds_its_own_image_target(compose):
    dockerfile = (ROOT / "infra" / "docker" / "Dockerfile").read_text()
    for name in TESSERA_SERVICES:
        build = compose["services"][name]["build"]
        assert build["target"] == name
        assert f" AS {name}\n" in dockerfile, f"the Dockerfile has no `{name}` target"
    assert compose["services"]["topics"]["build"]["target"] == "registry"


def test_compose_does_not_run_on_the_default_tokens(compose):
    env = compose["x-tessera-env"]
    for key in ("TESSERA_AUTH_TOKENS", "TESSERA_SERVICE_TOKEN"):
        assert env[key].startswith("${" + key + ":?"), f"{key} must be required, not defaulted"
    assert "tessera-dev-token" not in COMPOSE.read_text()
    assert "tessera-service-token" not in COMPOSE.read_text()


def test_metrics_ports_are_the_scraped_ones(compose):
    scraped = yaml.safe_load((ROOT / "infra" / "prometheus" / "prometheus.yml").read_text())
    (job,) = (c for c in scraped["scrape_configs"] if c["job_name"] == "tessera")
    targets = {target for group in job["static_configs"] for target in group["targets"]}
    in_compose = {
        f"{name}:{compose['services'][name]['environment']['TESSERA_METRICS_PORT']}" for name in TESSERA_SERVICES
    }
    assert targets == in_compose


TOKENS = {"TESSERA_AUTH_TOKENS": "a-token=admin,s-token=tessera-services", "TESSERA_SERVICE_TOKEN": "s-token"}


def _config(*files: Path, env: dict) -> subprocess.CompletedProcess:
    command = compose_command()
    args = [a for f in files for a in ("-f", str(f))]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    return subprocess.run(
        [*command, *args, "config", "-q"], capture_output=True, text=True, env={**clean, **env}, timeout=60
    )


@pytest.mark.skipif(compose_command() is None, reason="neither `docker compose` nor docker-compose (the test extra)")
def test_docker_compose_config_accepts_the_file():
    # The services refuse the public default tokens off loopback, so compose asks for tokens of one's own.
    result = _config(COMPOSE, env=TOKENS)
    assert result.returncode == 0, result.stderr
    result = _config(COMPOSE, GPU_OVERRIDE, env=TOKENS)
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(compose_command() is None, reason="neither `docker compose` nor docker-compose (the test extra)")
def test_docker_compose_config_refuses_to_run_without_tokens():
    result = _config(COMPOSE, env={})
    assert result.returncode != 0
    assert "TESSERA_AUTH_TOKENS" in result.stderr
