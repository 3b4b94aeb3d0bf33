"""The Helm chart in infra/k8s/tessera renders, for several value sets, into objects that the Kubernetes
OpenAPI schemas accept (offline), with what the platform needs: a Deployment per service with native gRPC
probes, settings from a ConfigMap, secrets as TESSERA_*_FILE files, serving on GPU nodes, lag-based HPAs."""

import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import referencing
import yaml

from infra.prometheus import targets as prometheus_targets

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "infra" / "k8s" / "tessera"
TOOLS = ROOT / "infra" / "k8s" / "tools.sh"
SCHEMAS = Path.home() / ".cache" / "tessera" / "k8s-schemas"
# The oldest and the newest Kubernetes the chart is checked against (Chart.yaml's kubeVersion is >= 1.27).
KUBERNETES_VERSIONS = ("1.27.0", "1.37.0")

pytestmark = pytest.mark.unit

SECRETS = [
    "--set",
    "secrets.values.authTokens=a-token=admin\\,s-token=tessera-services",
    "--set",
    "secrets.values.serviceToken=s-token",
    "--set",
    "secrets.values.pgDsn=postgresql://tessera:pw@db.example:5432/tessera",
]
S3_AND_LAG = [
    "--set",
    "secrets.existingSecret=tessera-prod",
    "--set",
    "artifacts.uri=s3://tessera-artifacts/prod",
    "--set",
    "artifacts.s3.endpoint=http://minio.storage.svc:9000",
    "--set",
    "artifacts.s3.allowHttp=true",
    "--set",
    "services.monitoring.autoscaling.enabled=true",
    "--set",
    "services.training-worker.autoscaling.enabled=true",
    "--set",
    "kafka.replicationFactor=3",
    "--set",
    "kafka.minInsyncReplicas=2",
]
CPU_ONLY = [*SECRETS, "-f", str(CHART / "values-cpu.yaml"), "--set", "services.registry.persistence.enabled=false"]
VALUE_SETS = {"defaults": SECRETS, "s3-and-lag-autoscaling": S3_AND_LAG, "cpu-only": CPU_ONLY}


@functools.cache
def helm() -> str:
    """helm from infra/k8s/tools.sh (built from the Go module proxy; quick when it is there)."""
    if shutil.which("go") is None and not (Path.home() / ".cache" / "tessera" / "bin" / "helm").exists():
        pytest.skip("helm is built from the Go module proxy and go is not installed here")
    # The schemas come through this interpreter's pip.
    env = {**os.environ, "TESSERA_PYTHON": sys.executable}
    result = subprocess.run(["bash", str(TOOLS)], capture_output=True, text=True, timeout=1800, env=env)
    assert result.returncode == 0, f"infra/k8s/tools.sh failed:\n{result.stderr[-3000:]}"
    return str(Path(result.stdout.strip().splitlines()[-1]) / "helm")


def render(*args: str, check: bool = True, version: str = KUBERNETES_VERSIONS[-1]) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [helm(), "template", "tessera", str(CHART), "--namespace", "tessera", "--kube-version", version, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


@functools.cache
def objects(name: str, version: str = KUBERNETES_VERSIONS[-1]) -> tuple[dict, ...]:
    return tuple(d for d in yaml.safe_load_all(render(*VALUE_SETS[name], version=version).stdout) if d)


def by_kind(docs, kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


@functools.cache
def schema_registry(version: str) -> tuple[Path, referencing.Registry]:
    folder = SCHEMAS / f"v{version}-local-strict"
    assert folder.is_dir(), f"no schemas for Kubernetes {version} in {SCHEMAS} (infra/k8s/tools.sh unpacks them)"
    definitions = json.loads((folder / "_definitions.json").read_text())
    resource = referencing.Resource.from_contents(definitions)
    return folder, referencing.Registry().with_resource(definitions["$id"], resource)


def schema_errors(doc: dict, version: str) -> list[str]:
    folder, registry = schema_registry(version)
    group_version = doc["apiVersion"].replace("/", "-").replace(".k8s.io", "").replace(".", "-")
    path = folder / f"{doc['kind'].lower()}-{group_version}.json"
    assert path.exists(), f"no schema for {doc['apiVersion']} {doc['kind']} in Kubernetes {version}"
    schema = json.loads(path.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema, registry=registry)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_every_rendered_object_passes_the_kubernetes_schema(values, version):
    docs = objects(values, version)
    assert docs
    for doc in docs:
        errors = schema_errors(doc, version)
        assert not errors, f"{doc['kind']} {doc['metadata']['name']} ({values}, {version}):\n" + "\n".join(errors)


def test_the_schema_check_catches_a_wrong_object():
    deployment = json.loads(json.dumps(next(iter(by_kind(objects("defaults"), "Deployment").values()))))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["port"] = "fifty"
    deployment["spec"]["replicaz"] = 2
    errors = schema_errors(deployment, KUBERNETES_VERSIONS[-1])
    assert any("replicaz" in e for e in errors) and any("fifty" in e for e in errors), errors


def test_a_deployment_per_service_with_native_grpc_probes():
    deployments = by_kind(objects("defaults"), "Deployment")
    for service in prometheus_targets.services():
        deployment = deployments[f"tessera-{service.name}"]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["python", "-m", f"services.{service.name}"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe] == {**container[probe], "grpc": {"port": service.grpc_port}}, probe
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["grpc"] == service.grpc_port and ports["metrics"] == service.metrics_port
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(service.metrics_port)
    services = by_kind(objects("defaults"), "Service")
    assert {f"tessera-{s.name}" for s in prometheus_targets.services()} <= set(services)


def test_the_training_worker_has_no_port_and_is_probed_by_the_alive_file_it_touches():
    docs = objects("defaults")
    worker = by_kind(docs, "Deployment")["tessera-training-worker"]["spec"]["template"]["spec"]
    (container,) = worker["containers"]
    assert container["command"] == ["python", "-m", "services.training.worker"]
    assert container["image"].endswith("-training:0.1.0")
    assert "ports" not in container and "tessera-training-worker" not in by_kind(docs, "Service")
    env = {e["name"]: e.get("value") for e in container["env"]}
    alive = env["TESSERA_TRAINING_WORKER_ALIVE_FILE"]
    for probe in ("startupProbe", "livenessProbe"):
        command = container[probe]["exec"]["command"]
        assert command[:5] == ["python", "infra/docker/healthcheck.py", "--alive-file", alive, command[4]], probe
        assert float(command[4]) > 0, probe
    # Per pod (/tmp is the pod's emptyDir): on the shared volume one live worker would hide a dead one.
    assert next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")["name"] == "tmp"
    assert not alive.startswith("/var/lib/tessera")


def test_the_training_api_and_its_workers_share_one_read_write_many_volume():
    docs = objects("defaults")
    claim = by_kind(docs, "PersistentVolumeClaim")["tessera-training-data"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for name in ("tessera-training", "tessera-training-worker"):
        spec = by_kind(docs, "Deployment")[name]["spec"]["template"]["spec"]
        (volume,) = (v for v in spec["volumes"] if v.get("persistentVolumeClaim"))
        assert volume["persistentVolumeClaim"]["claimName"] == "tessera-training-data", name
        mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == volume["name"])
        assert mount["mountPath"] == "/var/lib/tessera/training", name


def test_settings_come_from_the_configmap_and_secrets_from_files():
    docs = objects("defaults")
    (config,) = by_kind(docs, "ConfigMap").values()
    assert config["data"]["TESSERA_KAFKA_BOOTSTRAP"]
    assert config["data"]["TESSERA_REGISTRY_ADDRESS"] == "tessera-registry:50051"
    assert config["data"]["TESSERA_HOST"] == "0.0.0.0"
    assert not any("TOKEN" in key or "DSN" in key for key in config["data"]), "secrets do not go in a ConfigMap"
    (secret,) = by_kind(docs, "Secret").values()
    assert set(secret["stringData"]) == {"auth-tokens", "service-token", "pg-dsn"}
    for deployment in by_kind(docs, "Deployment").values():
        spec = deployment["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        assert container["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
        env = {e["name"]: e.get("value") for e in container["env"]}
        mount = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "secrets")
        assert env["TESSERA_AUTH_TOKENS_FILE"] == f"{mount}/auth-tokens"
        assert env["TESSERA_SERVICE_TOKEN_FILE"] == f"{mount}/service-token"
        assert env["TESSERA_PG_DSN_FILE"] == f"{mount}/pg-dsn"
        assert not any(e.get("valueFrom") for e in container["env"]), "secrets are files, not variables"
        assert next(v for v in spec["volumes"] if v["name"] == "secrets")["secret"]["secretName"] == "tessera-secrets"
        assert spec["securityContext"]["runAsNonRoot"] is True


def test_serving_asks_for_a_gpu_and_lands_on_gpu_nodes():
    serving = by_kind(objects("defaults"), "Deployment")["tessera-serving"]["spec"]["template"]["spec"]
    (container,) = serving["containers"]
    assert container["image"].endswith("-serving-gpu:0.1.0")
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert serving["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in serving["tolerations"]
    for name, deployment in by_kind(objects("defaults"), "Deployment").items():
        if name != "tessera-serving":
            resources = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]
            assert "nvidia.com/gpu" not in json.dumps(resources), name


def test_serving_on_cpu_asks_for_no_gpu():
    docs = objects("cpu-only")
    serving = by_kind(docs, "Deployment")["tessera-serving"]["spec"]["template"]["spec"]
    assert serving["containers"][0]["image"].endswith("-serving:0.1.0")
    assert "nvidia.com/gpu" not in json.dumps(serving)
    # Without persistence the registry's artifacts live as long as the pod: fine for a trial, said in values.yaml.
    assert "tessera-registry" not in by_kind(docs, "PersistentVolumeClaim")


def test_registry_keeps_local_artifacts_on_a_volume_and_s3_needs_none():
    docs = objects("defaults")
    claim = by_kind(docs, "PersistentVolumeClaim")["tessera-registry"]
    registry = by_kind(docs, "Deployment")["tessera-registry"]
    assert registry["spec"]["strategy"]["type"] == "Recreate"
    volumes = registry["spec"]["template"]["spec"]["volumes"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}} in volumes

    docs = objects("s3-and-lag-autoscaling")
    assert "tessera-registry" not in by_kind(docs, "PersistentVolumeClaim")
    assert not by_kind(docs, "Secret"), "an existing Secret is used, not made"
    (config,) = by_kind(docs, "ConfigMap").values()
    assert config["data"]["TESSERA_REGISTRY_ARTIFACT_URI"] == "s3://tessera-artifacts/prod"
    assert config["data"]["TESSERA_REGISTRY_S3_ENDPOINT"] == "http://minio.storage.svc:9000"
    container = by_kind(docs, "Deployment")["tessera-registry"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["TESSERA_REGISTRY_S3_ACCESS_KEY_ID_FILE"].endswith("/registry-s3-access-key-id")
    assert env["TESSERA_REGISTRY_S3_SECRET_ACCESS_KEY_FILE"].endswith("/registry-s3-secret-access-key")


def test_consumers_scale_on_their_consumer_lag():
    docs = objects("s3-and-lag-autoscaling")
    hpas = by_kind(docs, "HorizontalPodAutoscaler")
    assert set(hpas) == {"tessera-monitoring", "tessera-training-worker"}
    groups = {}
    for name, hpa in hpas.items():
        (metric,) = hpa["spec"]["metrics"]
        assert metric["type"] == "External"
        groups[name] = metric["external"]["metric"]["selector"]["matchLabels"]["consumergroup"]
        assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        # The HPA owns the replica count: a fixed one would fight it on every upgrade.
        assert "replicas" not in by_kind(docs, "Deployment")[name]["spec"]
    assert groups == {"tessera-monitoring": "tessera-monitoring", "tessera-training-worker": "tessera-training-workers"}
    assert not by_kind(objects("defaults"), "HorizontalPodAutoscaler")


def test_kafka_topic_settings_reach_the_topics_job():
    docs = objects("s3-and-lag-autoscaling")
    (job,) = by_kind(docs, "Job").values()
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["TESSERA_KAFKA_REPLICATION_FACTOR"] == "3"
    assert env["TESSERA_KAFKA_MIN_INSYNC_REPLICAS"] == "2"
    assert int(env["TESSERA_KAFKA_DLQ_RETENTION_MS"]) > 7 * 24 * 3600 * 1000
    assert container["command"][:4] == ["python", "-m", "services.common.kafka_admin", "create-topics"]


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ([], "secrets.values.authTokens"),
        ([*SECRETS, "--set", "artifacts.uri=s3://bucket/x"], "secrets.values.s3AccessKeyId"),
        ([*SECRETS, "--set", "kafka.bootstrap="], "kafka.bootstrap is required"),
    ],
)
def test_missing_required_values_fail_the_render_with_a_reason(missing, message):
    result = render(*missing, check=False)
    assert result.returncode != 0
    assert message in result.stderr


def test_a_kubernetes_without_native_grpc_probes_is_refused():
    result = render(*SECRETS, check=False, version="1.26.0")
    assert result.returncode != 0
    assert "kubeVersion" in result.stderr


def test_helm_lint_passes():
    command = [helm(), "lint", str(CHART), "--kube-version", KUBERNETES_VERSIONS[-1], *SECRETS]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
