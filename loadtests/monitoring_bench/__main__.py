"""`python -m loadtests.monitoring_bench`: the monitoring service on real Kafka and PostgreSQL.

1. Ingest: a backlog of payload logs on a fresh topic, consumed into the inference table
   with profiles and drift computed (one monitor, six LLM features, a slice); records/s.
2. Detection: a live stream at a fixed rate whose latency shifts by one standard deviation;
   seconds from the first shifted record to the drift event on the drift topic.
3. Anchor: the same drift statistics on the same window data with Evidently (own venv),
   against Tessera's per-window work (profile the window, compare with the cached baseline).

Bounded (a few minutes), loopback only; writes loadtests/results/monitoring_bench-*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import psycopg
from confluent_kafka import Consumer
from tessera.events.v1.drift_pb2 import DriftEvent

from loadtests import report
from loadtests.monitoring_bench.workload import FEATURES_CATEGORICAL, FEATURES_NUMERIC, PayloadLogFactory
from services.common import kafka_admin
from services.common.config import REPO_ROOT, CommonSettings, load
from services.common.db import Database, migrate
from services.common.kafka_producer import RECORD_ID, EventProducer
from services.monitoring import drift
from services.monitoring.app import MIGRATIONS, MonitoringApp
from services.monitoring.entities import build_monitor
from services.monitoring.profiles import CategoricalProfile, NumericProfile
from services.monitoring.settings import MonitoringSettings
from services.monitoring.store import MonitoringStore

log = logging.getLogger("monitoring_bench")
HEADERS = [("content-type", b"application/x-protobuf"), ("schema", b"tessera.events.v1.PayloadLog")]
EVIDENTLY_PYTHON = REPO_ROOT / ".data" / "venvs" / "evidently" / "bin" / "python"
FEATURES = [(f, "numeric") for f in FEATURES_NUMERIC] + [(f, "categorical") for f in FEATURES_CATEGORICAL]


def produce(producer: EventProducer, topic: str, values: list[bytes], first_id: int, endpoint: str) -> None:
    for i, value in enumerate(values):
        producer.produce_bytes(
            topic, value, key=endpoint, headers=[*HEADERS, (RECORD_ID, f"{endpoint}-{first_id + i}".encode())]
        )


def monitor_spec(monitor_id: str, endpoint: str, window: int, baseline: tuple[float, float]):
    return build_monitor(
        monitor_id=monitor_id,
        endpoint=endpoint,
        features=FEATURES,
        window_seconds=window,
        slices=["labels.region"],
        baseline_range=baseline,
        reference=None,
        thresholds=None,
        resolve_ratio=0.8,
        min_window_count=200,
        alert_on_previous_window=False,
        created_at=time.time(),
    )


async def count_rows(dsn: str, schema: str, endpoint: str) -> tuple[int, int]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        rows = await (
            await conn.execute(f"SELECT count(*) FROM {schema}.inference_records WHERE endpoint = %s", (endpoint,))
        ).fetchone()
        dirty = await (await conn.execute(f"SELECT count(*) FILTER (WHERE dirty) FROM {schema}.windows")).fetchone()
        return rows[0], dirty[0]


async def phase_ingest(args, dsn: str, settings: MonitoringSettings, producer: EventProducer) -> tuple[dict, dict]:
    endpoint, window = f"bench-{uuid.uuid4().hex[:6]}", args.window
    base = (int(time.time()) // window - 1000) * window
    windows = 20
    factory = PayloadLogFactory(endpoint, seed=1)
    event_times = np.sort(np.random.default_rng(2).uniform(base, base + windows * window, args.records))
    log.info("ingest: producing a backlog of %d payload logs over %d windows", args.records, windows)
    columns_by_window: dict[int, dict] = {}
    for start in range(0, args.records, 20_000):
        chunk = event_times[start : start + 20_000]
        values, columns = factory.batch(len(chunk), chunk)
        produce(producer, settings.monitoring_payload_topic, values, start, endpoint)
        for w in np.unique(((chunk - base) // window).astype(int)):
            mask = ((chunk - base) // window).astype(int) == w
            part = columns_by_window.setdefault(int(w), {k: [] for k in columns})
            for k, v in columns.items():
                part[k].append(v[mask])
    producer.flush_sync(120)
    # The monitor exists before the consumer starts, so every record is profiled.
    db = await Database(dsn, settings.monitoring_schema).open()
    await migrate(db, MIGRATIONS)
    await MonitoringStore(db).create_monitor(monitor_spec("bench-ingest", endpoint, window, (base, base + 2 * window)))
    await db.close()
    app = MonitoringApp(settings, serve_metrics=False)
    await app.start()
    # The clock starts once the group gave the consumer its partition (joining is a one-off).
    await app.consumer.wait_assigned()
    started = time.perf_counter()
    ingested_at = None
    while time.perf_counter() - started < args.max_seconds:
        rows, dirty = await count_rows(dsn, settings.monitoring_schema, endpoint)
        elapsed = time.perf_counter() - started
        if ingested_at is None and rows >= args.records:
            ingested_at = elapsed
            log.info("ingest: %d records in %.1fs: %.0f records/s", rows, elapsed, rows / elapsed)
        log.info("ingest: %d/%d rows, %d windows to evaluate, %.1fs", rows, args.records, dirty, elapsed)
        if ingested_at is not None and dirty == 0:
            break
        await asyncio.sleep(1.0)
    evaluated_at = time.perf_counter() - started
    result = {
        "records": args.records,
        "ingest_seconds": ingested_at,
        "records_per_s": args.records / ingested_at if ingested_at else float("nan"),
        "all_windows_evaluated_seconds": evaluated_at,
    }
    windows_data = {w: {k: np.concatenate(v) for k, v in parts.items()} for w, parts in columns_by_window.items()}
    return result, {"app": app, "windows": windows_data}


class DriftWatcher(threading.Thread):
    """Consumes the drift topic and notes when each event arrives."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest"}
        )
        self.consumer.subscribe([topic])
        self.events: list[tuple[float, DriftEvent]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            message = self.consumer.poll(0.1)
            if message is not None and not message.error():
                self.events.append((time.time(), DriftEvent.FromString(message.value())))
        self.consumer.close()


async def phase_detection(args, settings: MonitoringSettings, producer: EventProducer, app: MonitoringApp) -> dict:
    endpoint, window, rate = f"live-{uuid.uuid4().hex[:6]}", args.window, args.rate
    first_window = (int(time.time()) // window + 1) * window
    spec = monitor_spec("bench-live", endpoint, window, (first_window, first_window + 2 * window))
    await app.core.store.create_monitor(spec)  # a benchmark needs no registry: straight to the store
    await app.core.refresh_monitors()
    watcher = DriftWatcher(settings.kafka_bootstrap, settings.monitoring_drift_topic)
    watcher.start()
    factory = PayloadLogFactory(endpoint, seed=5)
    shift_at = first_window + 3 * window + window / 2  # mid-window, after two baseline and one normal window
    back_at = shift_at + 2 * window
    stop_at = back_at + 3 * window
    shifted_first = None
    sent = 0
    log.info("detection: live stream at %d records/s, shift at +%.0fs", rate, shift_at - time.time())
    next_log = time.time()
    while (now := time.time()) < stop_at:
        n = max(1, int(rate * 0.1))
        times = np.full(n, now)
        shifted = shift_at <= now < back_at
        values, _ = factory.batch(n, times, latency_mean=240.0 if shifted else 200.0)
        produce(producer, settings.monitoring_payload_topic, values, sent, endpoint)
        sent += n
        if shifted and shifted_first is None:
            shifted_first = now
        if now >= next_log:
            log.info(
                "detection: %d records sent, %s, %d drift events so far",
                sent,
                "shifted" if shifted else "normal",
                len(watcher.events),
            )
            next_log = now + 5
        await asyncio.sleep(max(0.0, 0.1 - (time.time() - now)))
    await asyncio.sleep(window + 2 * settings.monitoring_window_grace_s + settings.monitoring_idle_watermark_s)
    watcher.stopping.set()
    watcher.join()
    mine = [
        (t, e)
        for t, e in watcher.events
        if e.monitor_id == "bench-live" and e.feature == "latency_ms" and e.statistic == drift.WASSERSTEIN
    ]
    detected = next((t for t, e in mine if e.kind == DriftEvent.DRIFT_DETECTED), None)
    resolved = next((t for t, e in mine if e.kind == DriftEvent.DRIFT_RESOLVED), None)
    return {
        "window_seconds": window,
        "rate": rate,
        "records": sent,
        "detected_after_shift_s": detected - shifted_first if detected and shifted_first else float("nan"),
        "resolved_after_return_s": resolved - back_at if resolved else float("nan"),
        "events": [(e.feature, e.statistic, DriftEvent.Kind.Name(e.kind)) for _t, e in mine],
        "all_events": sorted(
            {
                f"{e.monitor_id} {e.feature} {e.slice or '*'} {e.statistic} {DriftEvent.Kind.Name(e.kind)}"
                for _t, e in watcher.events
            }
        ),
    }


def tessera_window_work(reference: dict, current: dict, repeats: int) -> tuple[float, float, dict]:
    """Per window: profile the window and compare it with the (cached) baseline profiles."""

    def profile(columns):
        return {
            k: CategoricalProfile.of(list(v)) if v.dtype.kind in "US" else NumericProfile.of(v)
            for k, v in columns.items()
        }

    baseline = profile(reference)
    per_window, from_raw, values = [], [], {}
    for _ in range(repeats):
        started = time.perf_counter()
        window_profiles = profile(current)
        values = {f: drift.compare(baseline[f], window_profiles[f]) for f in window_profiles}
        per_window.append(time.perf_counter() - started)
        started = time.perf_counter()
        both = profile(reference), profile(current)
        {f: drift.compare(both[0][f], both[1][f]) for f in both[1]}
        from_raw.append(time.perf_counter() - started)
    return statistics.median(per_window), statistics.median(from_raw), values


def phase_anchor(windows: dict, repeats: int) -> dict:
    reference = {k: np.concatenate([windows[0][k], windows[1][k]]) for k in windows[0]}
    # The window under test: window 5 with latency shifted by one standard deviation, so the
    # statistics (and the agreement between the two implementations) are far from zero.
    current = dict(windows[5], latency_ms=windows[5]["latency_ms"] + 40.0)
    ours_window, ours_raw, ours = tessera_window_work(reference, current, repeats)
    result = {
        "reference_rows": len(reference["latency_ms"]),
        "window_rows": len(current["latency_ms"]),
        "tessera_window_s": ours_window,
        "tessera_from_raw_s": ours_raw,
    }
    if not EVIDENTLY_PYTHON.exists():
        log.warning("Evidently is not installed: run loadtests/monitoring_bench/install_evidently.sh")
        return result
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "windows.npz"
        np.savez(path, **{f"ref_{k}": v for k, v in reference.items()}, **{f"cur_{k}": v for k, v in current.items()})
        log.info(
            "anchor: Evidently on %d reference and %d window rows", result["reference_rows"], result["window_rows"]
        )
        out = subprocess.run(
            [
                str(EVIDENTLY_PYTHON),
                str(Path(__file__).with_name("evidently_anchor.py")),
                str(path),
                str(max(3, repeats // 4)),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    theirs = json.loads(out.stdout.strip().splitlines()[-1])
    result["evidently_s"] = theirs["seconds"]
    result["statistics"] = theirs["statistics"]
    pairs = {
        "wasserstein": "wasserstein",
        "js_distance": "jensenshannon",
        "psi": "psi",
        "ks_pvalue": "ks",
        "chi2_pvalue": "chisquare",
    }
    result["agreement"] = {
        f"{feature}.{ours_name}": (round(stats[ours_name], 4), round(theirs["values"][f"{feature}.{name}"], 4))
        for feature, stats in ours.items()
        for ours_name, name in pairs.items()
        if ours_name in stats and f"{feature}.{name}" in theirs["values"]
    }
    return result


async def run(args) -> None:
    suffix = uuid.uuid4().hex[:8]
    common = load(CommonSettings)
    dsn = common.resolved_pg_dsn()
    payload_topic, drift_topic = f"bench.monitoring.logs.{suffix}", f"bench.monitoring.drift.{suffix}"
    kafka_admin.ensure_topics(
        common.kafka_bootstrap, [payload_topic, payload_topic + ".dlq", drift_topic], partitions=1
    )
    schema = f"monitoring_bench_{suffix}"
    settings = load(
        MonitoringSettings,
        pg_dsn=dsn,
        grpc_port=0,
        metrics_port=0,
        monitoring_schema=schema,
        monitoring_payload_topic=payload_topic,
        monitoring_drift_topic=drift_topic,
        monitoring_consumer_group=f"bench-monitoring-{suffix}",
        monitoring_window_grace_s=1.0,
        monitoring_idle_watermark_s=2.0,
        monitoring_evaluate_every_s=0.5,
        monitoring_authz="none",
    )
    producer = EventProducer(common.kafka_bootstrap, client_id="monitoring-bench")
    try:
        ingest, state = await phase_ingest(args, dsn, settings, producer)
        app = state["app"]
        try:
            if args.ingest_only:
                return
            detection = await phase_detection(args, settings, producer, app)
        finally:
            await app.stop()
        anchor = phase_anchor(state["windows"], args.repeats)
    finally:
        producer.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    ratio = anchor.get("evidently_s", float("nan")) / anchor["tessera_window_s"]
    rows = [
        ["payload logs/s into the inference table (profiles+drift)", ingest["records_per_s"], "-", "-", ">= 20,000"],
        ["all windows evaluated after (s)", ingest["all_windows_evaluated_seconds"], "-", "-", "-"],
        [
            f"drift event after first shifted record (s), window {args.window}s",
            detection["detected_after_shift_s"],
            "-",
            "-",
            f"<= {args.window + 5}",
        ],
        ["resolved event after the return (s)", detection["resolved_after_return_s"], "-", "-", "-"],
        [
            f"drift per window, {anchor.get('statistics', 0)} statistics (ms)",
            anchor["tessera_window_s"] * 1000,
            anchor.get("evidently_s", float("nan")) * 1000,
            f"{ratio:.1f}x faster",
            "faster",
        ],
        [
            "same, profiling both sides from raw rows (ms)",
            anchor["tessera_from_raw_s"] * 1000,
            anchor.get("evidently_s", float("nan")) * 1000,
            f"{anchor.get('evidently_s', float('nan')) / anchor['tessera_from_raw_s']:.1f}x faster",
            "-",
        ],
    ]
    print()
    print(report.table(["measure", "Tessera", "Evidently 0.7.23", "ratio", "goal"], rows))
    print("\nagreement (Tessera, Evidently):")
    for name, pair in anchor.get("agreement", {}).items():
        print(f"  {name}: {pair}")
    path = report.save("monitoring_bench", {"ingest": ingest, "detection": detection, "anchor": anchor})
    print(f"\nresults: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--window", type=int, default=10, help="window seconds (the service accepts >= 1)")
    parser.add_argument("--rate", type=int, default=2000, help="records/s of the live stream")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--max-seconds", type=float, default=240.0)
    parser.add_argument("--ingest-only", action="store_true", help="only the ingest phase (for profiling)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("services").setLevel(logging.WARNING)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
