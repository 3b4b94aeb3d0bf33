"""Prometheus metrics per endpoint, computed from the payload logs, plus drift gauges.

Observations arrive a batch at a time as NumPy arrays; `BulkHistogram` adds a
whole batch to its buckets with one `np.searchsorted`, where prometheus_client's
Histogram would lock once per record.
"""

from __future__ import annotations

import threading

import numpy as np
from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import HistogramMetricFamily


class BoundedLabels:
    """Label values from client-chosen names, a bounded number of distinct ones.

    Values vouched for (an endpoint that answered a call: it exists and the caller
    was allowed) get a large budget; others (names only ever seen on refused or
    failed calls, which anyone can send) a small one. Past its budget a value is
    counted under `overflow`, so random names cannot grow every scrape without end.
    """

    def __init__(self, limit: int, unvouched_limit: int, overflow: str = "other") -> None:
        self.limit = limit
        self.unvouched_limit = unvouched_limit
        self.overflow = overflow
        self._vouched: set[str] = set()
        self._unvouched: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: str, vouched: bool = True) -> str:
        if value in self._vouched or value in self._unvouched and not vouched:
            return value
        with self._lock:
            if vouched and len(self._vouched) < self.limit:
                self._vouched.add(value)
                return value
            if value in self._unvouched:
                return value
            if not vouched and len(self._unvouched) < self.unvouched_limit:
                self._unvouched.add(value)
                return value
        return self.overflow


ENDPOINT_LABEL = BoundedLabels(2000, 100)
SLICE_LABEL = BoundedLabels(2000, 0)
# Serving writes gRPC status code names; anything else is counted as OTHER.
STATUSES = frozenset(
    {
        "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
        "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
        "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
    }
)  # fmt: skip


def status_label(status: str) -> str:
    return status if status in STATUSES else "OTHER"


REQUESTS = Counter("tessera_monitoring_requests_total", "Requests seen in the payload logs", ["endpoint", "status"])
ERRORS = Counter(
    "tessera_monitoring_errors_total", "Requests whose status is not OK, by status", ["endpoint", "status"]
)
TOKENS = Counter("tessera_monitoring_tokens_total", "Tokens in the payload logs", ["endpoint", "kind"])
DUPLICATES = Counter(
    "tessera_monitoring_duplicate_records_total", "Redelivered payload logs the inference table already had"
)
EXPIRED = Counter(
    "tessera_monitoring_expired_records_total", "Payload logs older than the retention period, not stored"
)
DRIFT_VALUE = Gauge(
    "tessera_monitoring_drift_value",
    "Last drift statistic of a monitor's feature (whole stream and slices)",
    ["monitor", "endpoint", "feature", "slice", "statistic", "comparison"],
)
DRIFT_ACTIVE = Gauge(
    "tessera_monitoring_drift_active",
    "1 while a drift alarm is raised",
    ["monitor", "endpoint", "feature", "slice", "statistic", "comparison"],
)
DRIFT_EVENTS = Counter(
    "tessera_monitoring_drift_events_total",
    "Drift events raised (committed with their outbox rows)",
    ["endpoint", "kind"],
)
WINDOWS_EVALUATED = Counter("tessera_monitoring_windows_evaluated_total", "Windows profiled and compared", ["monitor"])
WATERMARK_LAG = Gauge("tessera_monitoring_event_time_lag_seconds", "Wall clock minus the newest event time ingested")


class BulkHistogram:
    """A labelled histogram fed with arrays; exposed through a custom collector."""

    def __init__(self, name: str, documentation: str, label: str, buckets: tuple[float, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.label = label
        self.bounds = np.asarray(buckets, dtype=np.float64)
        self._series: dict[str, tuple[np.ndarray, list[float]]] = {}
        self._lock = threading.Lock()
        REGISTRY.register(self)

    def observe_many(self, label_value: str, values: np.ndarray) -> None:
        if not len(values):
            return
        counts = np.bincount(np.searchsorted(self.bounds, values, side="left"), minlength=len(self.bounds) + 1)
        with self._lock:
            buckets, total = self._series.setdefault(
                label_value, (np.zeros(len(self.bounds) + 1, dtype=np.int64), [0.0])
            )
            buckets += counts
            total[0] += float(values.sum())

    def collect(self):
        family = HistogramMetricFamily(self.name, self.documentation, labels=[self.label])
        with self._lock:
            for label_value, (buckets, total) in self._series.items():
                cumulative = np.cumsum(buckets)
                pairs = [(_le(b), float(c)) for b, c in zip(self.bounds, cumulative[:-1], strict=True)]
                pairs.append(("+Inf", float(cumulative[-1])))
                family.add_metric([label_value], pairs, total[0])
        yield family

    def describe(self):
        return []


def _le(bound: float) -> str:
    return repr(float(bound))


LATENCY = BulkHistogram(
    "tessera_monitoring_request_latency_seconds",
    "Request latency from the payload logs",
    "endpoint",
    (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
TIME_TO_FIRST_TOKEN = BulkHistogram(
    "tessera_monitoring_time_to_first_token_seconds",
    "Time to first token from the payload logs (LLM requests)",
    "endpoint",
    (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


# Quality metrics from the evaluation service's online evaluations (services/monitoring/quality.py).
# Endpoint and metric names come from a trusted producer but are bounded all the same.
QUALITY_ENDPOINT_LABEL = BoundedLabels(2000, 0)
QUALITY_METRIC_LABEL = BoundedLabels(200, 0)
QUALITY_VALUE = Gauge(
    "tessera_quality_metric",
    "An online evaluation's latest window: the mean of the measured values of a metric",
    ["endpoint", "metric"],
)
QUALITY_COVERAGE = Gauge(
    "tessera_quality_coverage",
    "An online evaluation's latest window: measured / (measured + unmeasured) of a metric",
    ["endpoint", "metric"],
)
QUALITY_MEASURED = Gauge(
    "tessera_quality_measured", "An online evaluation's latest window: values measured", ["endpoint", "metric"]
)
QUALITY_UNMEASURED = Gauge(
    "tessera_quality_unmeasured",
    "An online evaluation's latest window: values not measured (no parseable verdict...)",
    ["endpoint", "metric"],
)
QUALITY_WINDOWS = Counter(
    "tessera_quality_windows_total",
    "Quality metric rows stored (one per metric of a window or an eval run's summary)",
    ["endpoint", "kind"],
)
QUALITY_DUPLICATES = Counter("tessera_quality_duplicate_rows_total", "Redelivered quality summaries already stored")
