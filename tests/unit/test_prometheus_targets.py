"""Prometheus scrapes exactly the services that exist: its configs are what infra/prometheus/targets.py writes."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infra.prometheus import targets

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.unit


def test_the_committed_configs_are_up_to_date():
    result = subprocess.run(
        [sys.executable, str(ROOT / "infra" / "prometheus" / "targets.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", ["prometheus.yml", "prometheus.local.yml"])
def test_every_target_is_a_service_that_exists(name):
    config = yaml.safe_load((ROOT / "infra" / "prometheus" / name).read_text())
    (job,) = (c for c in config["scrape_configs"] if c["job_name"] == "tessera")
    labelled = {group["labels"]["service"] for group in job["static_configs"]}
    existing = {p.parent.name for p in (ROOT / "services").glob("*/__main__.py")} - {"demo"}
    assert labelled == existing


def test_a_new_service_gets_a_target_and_a_removed_one_loses_it(tmp_path):
    for name, port in (("alpha", 9201), ("beta", 9202)):
        folder = tmp_path / "services" / name
        folder.mkdir(parents=True)
        (folder / "__main__.py").write_text("")
        (folder / "settings.py").write_text(f"class S:\n    grpc_port: int = 5{port}\n    metrics_port: int = {port}\n")
    assert [(s.name, s.metrics_port) for s in targets.services(tmp_path)] == [("alpha", 9201), ("beta", 9202)]
    (tmp_path / "services" / "beta" / "__main__.py").unlink()
    assert [s.name for s in targets.services(tmp_path)] == ["alpha"]


def test_a_service_without_a_metrics_port_is_refused(tmp_path):
    folder = tmp_path / "services" / "gamma"
    folder.mkdir(parents=True)
    (folder / "__main__.py").write_text("")
    (folder / "settings.py").write_text("class S:\n    grpc_port: int = 50099\n")
    with pytest.raises(SystemExit, match="gamma"):
        targets.services(tmp_path)
