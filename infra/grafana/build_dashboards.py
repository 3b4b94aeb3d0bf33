"""Write Tessera's Grafana dashboards (infra/grafana/dashboards/*.json) from one place.

    python infra/grafana/build_dashboards.py          write the JSON files
    python infra/grafana/build_dashboards.py --check  exit 1 if the committed files differ

Every panel queries metrics the services export: the shared runtime's
(`tessera_grpc_*`, `tessera_kafka_*`) and monitoring's per-endpoint metrics computed
from the payload logs (`tessera_monitoring_*`), and the quality metrics of online evaluations
(`tessera_quality_*`) next to drift. The dashboard test runs each query
against a real Prometheus scraping a loaded service.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DASHBOARDS = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "tessera-prometheus"}
RATE = "$__rate_interval"


def variable(name: str, metric: str, label: str) -> dict:
    return {
        "name": name,
        "label": name,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": f"label_values({metric}, {label})", "refId": f"{name}-values"},
        "definition": f"label_values({metric}, {label})",
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": "All", "value": "$__all"},
        "refresh": 2,
    }


def panel(title: str, targets: list[tuple[str, str]], unit: str = "short", kind: str = "timeseries") -> dict:
    return {
        "type": kind,
        "title": title,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend, "datasource": DATASOURCE}
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def dashboard(uid: str, title: str, panels: list[dict], variables: list[dict]) -> dict:
    for i, p in enumerate(panels):
        p["id"] = i + 1
        p["gridPos"] = {"h": 8, "w": 12, "x": (i % 2) * 12, "y": (i // 2) * 8}
    return {
        "uid": uid,
        "title": title,
        "tags": ["tessera"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": variables},
        "panels": panels,
    }


def serving_overview() -> dict:
    ep = 'endpoint=~"$endpoint"'
    latency = "tessera_monitoring_request_latency_seconds_bucket"
    ttft = "tessera_monitoring_time_to_first_token_seconds_bucket"
    return dashboard(
        "tessera-serving-overview",
        "Tessera / Serving overview",
        [
            panel(
                "Requests/s by endpoint",
                [(f"sum by (endpoint) (rate(tessera_monitoring_requests_total{{{ep}}}[{RATE}]))", "{{endpoint}}")],
                "reqps",
            ),
            panel(
                "Errors/s by status",
                [
                    (
                        f"sum by (endpoint, status) (rate(tessera_monitoring_errors_total{{{ep}}}[{RATE}]))",
                        "{{endpoint}} {{status}}",
                    )
                ],
                "reqps",
            ),
            panel(
                "Error ratio",
                [
                    (
                        f"sum by (endpoint) (rate(tessera_monitoring_errors_total{{{ep}}}[{RATE}])) / sum by (endpoint) (rate(tessera_monitoring_requests_total{{{ep}}}[{RATE}]))",
                        "{{endpoint}}",
                    )
                ],
                "percentunit",
            ),
            panel(
                "Latency p50 / p95 / p99",
                [
                    (
                        f"histogram_quantile({q}, sum by (endpoint, le) (rate({latency}{{{ep}}}[{RATE}])))",
                        f"{{{{endpoint}}}} p{int(q * 100)}",
                    )
                    for q in (0.5, 0.95, 0.99)
                ],
                "s",
            ),
            panel(
                "Time to first token p50 / p95",
                [
                    (
                        f"histogram_quantile({q}, sum by (endpoint, le) (rate({ttft}{{{ep}}}[{RATE}])))",
                        f"{{{{endpoint}}}} p{int(q * 100)}",
                    )
                    for q in (0.5, 0.95)
                ],
                "s",
            ),
            panel(
                "Tokens/s",
                [
                    (
                        f"sum by (endpoint, kind) (rate(tessera_monitoring_tokens_total{{{ep}}}[{RATE}]))",
                        "{{endpoint}} {{kind}}",
                    )
                ],
            ),
            panel(
                "gRPC calls/s by service",
                [(f"sum by (service, method) (rate(tessera_grpc_requests_total[{RATE}]))", "{{service}} {{method}}")],
                "reqps",
            ),
            panel(
                "gRPC latency p95 by service",
                [
                    (
                        f"histogram_quantile(0.95, sum by (service, le) (rate(tessera_grpc_request_duration_seconds_bucket[{RATE}])))",
                        "{{service}}",
                    )
                ],
                "s",
            ),
            panel(
                "Usage: tokens/min by endpoint and principal",
                [
                    (
                        f"sum by (endpoint, principal) (rate(tessera_serving_usage_tokens_total{{{ep}}}[{RATE}])) * 60",
                        "{{endpoint}} {{principal}}",
                    )
                ],
            ),
            panel(
                "Usage: cost USD/hour by endpoint and principal (unpriced calls/hour apart)",
                [
                    (
                        f"sum by (endpoint, principal) (rate(tessera_serving_usage_cost_usd_total{{{ep}}}[{RATE}])) * 3600",
                        "{{endpoint}} {{principal}} USD",
                    ),
                    (
                        f"sum by (endpoint, principal) (rate(tessera_serving_usage_unpriced_requests_total{{{ep}}}[{RATE}])) * 3600",
                        "{{endpoint}} {{principal}} unpriced calls",
                    ),
                ],
            ),
        ],
        [variable("endpoint", "tessera_monitoring_requests_total", "endpoint")],
    )


def drift() -> dict:
    sel = 'monitor=~"$monitor"'
    quality = 'endpoint=~"$endpoint"'
    return dashboard(
        "tessera-drift",
        "Tessera / Drift",
        [
            panel(
                "Drift vs baseline (whole stream)",
                [
                    (
                        f'tessera_monitoring_drift_value{{{sel}, comparison="baseline", slice=""}}',
                        "{{monitor}} {{feature}} {{statistic}}",
                    )
                ],
            ),
            panel(
                "Drift vs previous window",
                [
                    (
                        f'tessera_monitoring_drift_value{{{sel}, comparison="previous_window", slice=""}}',
                        "{{monitor}} {{feature}} {{statistic}}",
                    )
                ],
            ),
            # Quality next to drift: the evaluation service's online evaluations, latest window per endpoint.
            panel(
                "Quality: online evaluation, latest window mean",
                [(f"tessera_quality_metric{{{quality}}}", "{{endpoint}} {{metric}}")],
            ),
            panel(
                "Quality: coverage (share measured, latest window)",
                [(f"tessera_quality_coverage{{{quality}}}", "{{endpoint}} {{metric}}")],
                "percentunit",
            ),
            panel(
                "Drift by slice (Wasserstein, JS)",
                [
                    (
                        f'tessera_monitoring_drift_value{{{sel}, slice!="", statistic=~"wasserstein|js_distance"}}',
                        "{{feature}} {{slice}} {{statistic}}",
                    )
                ],
            ),
            panel(
                "Alarms raised",
                [
                    (
                        f"sum by (monitor, feature, statistic) (tessera_monitoring_drift_active{{{sel}}})",
                        "{{monitor}} {{feature}} {{statistic}}",
                    )
                ],
            ),
            panel(
                "Drift events (1h)",
                [
                    (
                        "sum by (endpoint, kind) (increase(tessera_monitoring_drift_events_total[1h]))",
                        "{{endpoint}} {{kind}}",
                    )
                ],
            ),
            panel(
                "Windows evaluated/s",
                [
                    (
                        f"sum by (monitor) (rate(tessera_monitoring_windows_evaluated_total{{{sel}}}[{RATE}]))",
                        "{{monitor}}",
                    )
                ],
            ),
            panel(
                "Event-time lag of the inference table",
                [("max(tessera_monitoring_event_time_lag_seconds)", "lag")],
                "s",
            ),
            panel(
                "Redelivered payload logs/s",
                [(f"sum(rate(tessera_monitoring_duplicate_records_total[{RATE}]))", "duplicates")],
            ),
        ],
        [
            variable("monitor", "tessera_monitoring_drift_value", "monitor"),
            variable("endpoint", "tessera_quality_metric", "endpoint"),
        ],
    )


def mesh_health() -> dict:
    return dashboard(
        "tessera-mesh-health",
        "Tessera / Mesh health",
        [
            panel("Service up", [('up{job="tessera"}', "{{service}}")], kind="stat"),
            panel(
                "Kafka consumer lag", [("sum by (group, topic) (tessera_kafka_consumer_lag)", "{{group}} {{topic}}")]
            ),
            panel(
                "Records consumed/s",
                [
                    (
                        f"sum by (group, topic) (rate(tessera_kafka_records_consumed_total[{RATE}]))",
                        "{{group}} {{topic}}",
                    )
                ],
            ),
            panel(
                "Records produced/s",
                [(f"sum by (topic) (rate(tessera_kafka_records_produced_total[{RATE}]))", "{{topic}}")],
            ),
            panel(
                "Dead-lettered records (1h)",
                [("sum by (topic, group) (increase(tessera_kafka_dlq_records_total[1h]))", "{{group}} {{topic}}")],
            ),
            panel(
                "gRPC errors/s by code",
                [(f"sum by (service, code) (rate(tessera_grpc_errors_total[{RATE}]))", "{{service}} {{code}}")],
                "reqps",
            ),
        ],
        [],
    )


def render() -> dict[str, str]:
    return {
        f"{name}.json": json.dumps(build(), indent=2) + "\n"
        for name, build in (("serving-overview", serving_overview), ("drift", drift), ("mesh-health", mesh_health))
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    stale = []
    for name, text in render().items():
        path = DASHBOARDS / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            DASHBOARDS.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print(f"stale dashboards (run python {Path(__file__).name}): {', '.join(stale)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
