"""The committed dashboards are what build_dashboards.py writes, and point at the provisioned datasource."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from services.common.config import REPO_ROOT

pytestmark = pytest.mark.unit

GRAFANA = REPO_ROOT / "infra" / "grafana"


def test_committed_dashboards_match_their_generator():
    result = subprocess.run(
        [sys.executable, str(GRAFANA / "build_dashboards.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_panel_queries_the_provisioned_prometheus():
    provisioned = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = provisioned["datasources"][0]["uid"]
    names = {p.stem for p in (GRAFANA / "dashboards").glob("*.json")}
    assert names == {"serving-overview", "drift", "mesh-health"}
    for name in names:
        dashboard = json.loads((GRAFANA / "dashboards" / f"{name}.json").read_text())
        assert dashboard["panels"], name
        for panel in dashboard["panels"]:
            assert panel["datasource"]["uid"] == uid
            assert panel["targets"] and all(t["expr"] for t in panel["targets"])
