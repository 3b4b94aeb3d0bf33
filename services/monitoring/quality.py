"""Quality metrics from the evaluation service: `tessera.eval.results` summaries -> rows and gauges.

An online evaluation publishes one summary record per scored window (`example_id` empty,
`online_evaluation_id`, `window_start`/`window_end`, one MetricValue per metric: the window's
mean, measured, unmeasured); an eval run publishes per-row records (not kept here: the
evaluation service stores those) and summaries. A summary becomes one row per metric, keyed by
(online evaluation or eval run id, window end, metric): the first record of a key wins, so a
redelivery changes nothing. Every field is bounded before anything is written; a record past a
bound (or with a non-finite value) goes to the DLQ with the reason.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence

from tessera.events.v1.evaluation_pb2 import EvalResult

from services.common.errors import InvalidArgument
from services.monitoring import metrics
from services.monitoring.entities import MAX_ENDPOINT, ONLINE, RUN, QualityMetric
from services.monitoring.quality_store import QualityStore

MAX_ID = 128
MAX_METRICS = 64
MAX_COUNT = 10**12
# Metric names are identifiers (exact_match, token_f1, correctness, ...), never free text.
METRIC_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
EARLIEST_TIME = 946684800.0  # 2000-01-01
MAX_CLOCK_SKEW_S = 3600.0


def _check_id(name: str, value: str) -> None:
    if len(value) > MAX_ID:
        raise InvalidArgument(f"{name} is {len(value)} characters long (at most {MAX_ID})", field=name)
    if "\x00" in value:
        raise InvalidArgument(f"{name} contains a NUL character", field=name)


def _seconds(stamp, name: str) -> float:
    value = stamp.seconds + stamp.nanos * 1e-9
    if not EARLIEST_TIME <= value <= time.time() + MAX_CLOCK_SKEW_S:
        raise InvalidArgument(f"{name} {value:.0f} is before 2000 or in the future", field=name)
    return value


def quality_rows(result: EvalResult) -> list[QualityMetric]:
    """The rows of one summary record; InvalidArgument past a bound. An eval run's per-row records
    (example_id set) give none: the evaluation service keeps those."""
    if result.example_id:
        return []
    online_id, run_id, endpoint = result.online_evaluation_id, result.eval_run_id, result.target_endpoint
    _check_id("online_evaluation_id", online_id)
    _check_id("eval_run_id", run_id)
    if not online_id and not run_id:
        raise InvalidArgument("summary has neither online_evaluation_id nor eval_run_id", field="eval_run_id")
    if not endpoint:
        raise InvalidArgument("summary has no target_endpoint", field="target_endpoint")
    if len(endpoint) > MAX_ENDPOINT or "\x00" in endpoint:
        raise InvalidArgument(f"target_endpoint: at most {MAX_ENDPOINT} characters, no NUL", field="target_endpoint")
    if not result.metrics:
        raise InvalidArgument("summary has no metrics", field="metrics")
    if len(result.metrics) > MAX_METRICS:
        raise InvalidArgument(f"summary has {len(result.metrics)} metrics (at most {MAX_METRICS})", field="metrics")
    if online_id:
        if not result.HasField("window_end"):
            raise InvalidArgument("online summary has no window_end", field="window_end")
        end = _seconds(result.window_end, "window_end")
        start = _seconds(result.window_start, "window_start") if result.HasField("window_start") else None
        if start is not None and start >= end:
            raise InvalidArgument("window_start is not before window_end", field="window_start")
    else:  # an eval run's summary: keyed by when it was published
        if not result.HasField("at"):
            raise InvalidArgument("eval run summary has no `at` timestamp", field="at")
        start, end = None, _seconds(result.at, "at")
    rows, seen = [], set()
    for value in result.metrics:
        name = value.metric
        if not METRIC_NAME.match(name):
            raise InvalidArgument(
                f"metric name {name[:64]!r} is not 1-128 characters of letters, digits, _ . : -", field="metrics"
            )
        if name in seen:
            raise InvalidArgument(f"metric {name!r} appears twice", field="metrics")
        seen.add(name)
        mean = value.value if value.HasField("value") else None
        if mean is not None and not math.isfinite(mean):
            raise InvalidArgument(f"metric {name!r} has a non-finite value ({mean})", field="metrics")
        for count_name in ("measured", "unmeasured"):
            count = getattr(value, count_name)
            if not 0 <= count <= MAX_COUNT:
                raise InvalidArgument(f"metric {name!r}: {count_name} must be 0-{MAX_COUNT}", field="metrics")
        if mean is not None and value.measured == 0:
            raise InvalidArgument(f"metric {name!r} has a mean but nothing measured", field="metrics")
        rows.append(
            QualityMetric(
                endpoint=endpoint,
                metric=name,
                kind=ONLINE if online_id else RUN,
                source_id=online_id or run_id,
                eval_run_id=run_id,
                window_start=start,
                window_end=end,
                value=mean,
                measured=value.measured,
                unmeasured=value.unmeasured,
            )
        )
    return rows


class QualityIngestor:
    """Writes summaries (one transaction per batch) and keeps the gauges at each endpoint's latest window."""

    def __init__(self, store: QualityStore) -> None:
        self.store = store
        # (endpoint label, metric label) -> window end behind the gauge: an older window arriving
        # late is stored but does not move the gauge back.
        self._latest: dict[tuple[str, str], float] = {}

    async def ingest(self, rows: Sequence[QualityMetric]) -> int:
        """Store the rows; returns how many were new (the others had been stored before)."""
        if not rows:
            return 0
        fresh = await self.store.insert(rows)
        metrics.QUALITY_DUPLICATES.inc(len(rows) - len(fresh))
        for row in fresh:
            metrics.QUALITY_WINDOWS.labels(metrics.QUALITY_ENDPOINT_LABEL(row.endpoint), row.kind).inc()
            if row.kind == ONLINE:
                self._observe(row)
        return len(fresh)

    def _observe(self, row: QualityMetric) -> None:
        key = (metrics.QUALITY_ENDPOINT_LABEL(row.endpoint), metrics.QUALITY_METRIC_LABEL(row.metric))
        if self._latest.get(key, -math.inf) > row.window_end:
            return
        self._latest[key] = row.window_end
        metrics.QUALITY_VALUE.labels(*key).set(math.nan if row.value is None else row.value)
        coverage = row.coverage
        metrics.QUALITY_COVERAGE.labels(*key).set(math.nan if coverage is None else coverage)
        metrics.QUALITY_MEASURED.labels(*key).set(row.measured)
        metrics.QUALITY_UNMEASURED.labels(*key).set(row.unmeasured)
