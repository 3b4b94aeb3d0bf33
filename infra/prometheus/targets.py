"""Writes Prometheus's scrape configs from the services that exist.

A service is a folder of services/ with a `__main__.py` (the demo is a client, not a
service); its metrics port is the `metrics_port` default of its settings class. So a
service added or removed changes the targets, and a target never names one that is gone.

    python infra/prometheus/targets.py            rewrite prometheus.yml and prometheus.local.yml
    python infra/prometheus/targets.py --check    exit 1 when either is out of date
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
NOT_SERVICES = {"demo"}
SETTINGS_FILES = ("settings.py", "config.py")


@dataclass(frozen=True)
class Service:
    name: str
    grpc_port: int
    metrics_port: int


def _port_defaults(path: Path) -> dict[str, int]:
    """`grpc_port` and `metrics_port` defaults of the class annotations in a settings module."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            if node.target.id in ("grpc_port", "metrics_port") and isinstance(node.value, ast.Constant):
                found[node.target.id] = int(node.value.value)
    return found


def services(root: Path = ROOT) -> list[Service]:
    out = []
    for main in sorted((root / "services").glob("*/__main__.py")):
        name = main.parent.name
        if name in NOT_SERVICES:
            continue
        ports: dict[str, int] = {}
        for filename in SETTINGS_FILES:
            if (main.parent / filename).exists():
                ports.update(_port_defaults(main.parent / filename))
        if "metrics_port" not in ports or "grpc_port" not in ports:
            raise SystemExit(f"services/{name}: no grpc_port/metrics_port default in {' or '.join(SETTINGS_FILES)}")
        out.append(Service(name, ports["grpc_port"], ports["metrics_port"]))
    return out


def render(found: list[Service], host_of, header: str, with_self: bool) -> str:
    lines = [*header.strip("\n").splitlines(), "# Written by infra/prometheus/targets.py: edit that, not this file."]
    lines += [
        "global:",
        "  scrape_interval: 10s",
        "  evaluation_interval: 10s",
        "",
        "scrape_configs:",
        "  - job_name: tessera",
        "    metrics_path: /metrics",
        "    static_configs:",
    ]
    for s in found:
        lines += [f'      - targets: ["{host_of(s)}:{s.metrics_port}"]', f"        labels: {{service: {s.name}}}"]
    if with_self:
        lines += ["  - job_name: prometheus", "    static_configs:", '      - targets: ["localhost:9090"]']
    return "\n".join(lines) + "\n"


COMPOSE_HEADER = """
# Prometheus for docker-compose: every Tessera service's /metrics, by its compose service name.
# The `service` label names the service; dashboards group by it.
"""
LOCAL_HEADER = """
# Prometheus for services started natively by `make up` (all on 127.0.0.1).
# Run: prometheus --config.file=infra/prometheus/prometheus.local.yml --web.listen-address=127.0.0.1:9090 \\
#        --storage.tsdb.path=.data/prometheus
"""


def outputs(root: Path = ROOT) -> dict[Path, str]:
    found = services(root)
    return {
        HERE / "prometheus.yml": render(found, lambda s: s.name, COMPOSE_HEADER, with_self=True),
        HERE / "prometheus.local.yml": render(found, lambda s: "127.0.0.1", LOCAL_HEADER, with_self=False),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when a written file is out of date")
    args = parser.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        if path.exists() and path.read_text() == text:
            continue
        if args.check:
            stale.append(path.relative_to(ROOT).as_posix())
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run python infra/prometheus/targets.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
