"""Act three: a drift monitor on the scorer, live traffic that shifts half way, the alarm read back."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
from tessera.events.v1.drift_pb2 import DriftEvent
from tessera.monitoring.v1 import monitoring_pb2 as mpb

from services.demo.clients import Clients
from services.demo.console import StepSkipped, progress, say
from services.demo.serving_steps import score

WINDOW_S = 5
# Two windows of traffic like the training data, two with feature f0 moved by two standard deviations,
# then one normal again: the alarm is raised and then resolved.
PHASES = (("normal", 0.0), ("normal", 0.0), ("shifted", 2.0), ("shifted", 2.0), ("normal", 0.0))
PER_WINDOW = 75
FEATURES = ("inputs.features[0][0]", "outputs.score[0][0]")


async def create_monitor(clients: Clients, endpoint: str, reference: np.ndarray, scores: np.ndarray) -> mpb.Monitor:
    """Compare every 5 s window of live traffic with the training data (a reference baseline)."""
    for old in (
        await clients.monitoring.ListMonitors(mpb.ListMonitorsRequest(endpoint=endpoint), metadata=clients.md)
    ).monitors:
        await clients.monitoring.DeleteMonitor(mpb.DeleteMonitorRequest(monitor_id=old.monitor_id), metadata=clients.md)
    monitor = mpb.Monitor(
        endpoint=endpoint,
        features=[mpb.FeatureSpec(path=path, kind=mpb.NUMERIC) for path in FEATURES],
        window_seconds=WINDOW_S,
        thresholds=mpb.Thresholds(values={"wasserstein": 0.5}, min_window_count=30),
    )
    monitor.baseline.reference.values.add(feature=FEATURES[0], numbers=reference[:, 0].tolist())
    monitor.baseline.reference.values.add(feature=FEATURES[1], numbers=scores.tolist())
    return await clients.monitoring.CreateMonitor(mpb.CreateMonitorRequest(monitor=monitor), metadata=clients.md)


async def send_traffic(clients: Clients, endpoint: str, seed: int) -> tuple[float, float]:
    """PER_WINDOW requests per window, paced over the window, phase by phase; returns (start, end) times."""
    rng = np.random.default_rng(seed)
    sent = 0
    started = time.time()
    # Start on a window boundary so each phase fills its own windows.
    await asyncio.sleep(WINDOW_S - started % WINDOW_S + 0.05)
    first = time.time()
    async with progress("drift", "sending traffic", detail=lambda: f"{sent} requests sent"):
        for w, (phase, shift) in enumerate(PHASES):
            window_start = first + w * WINDOW_S
            rows = rng.normal(size=(PER_WINDOW, 4)).astype(np.float32)
            rows[:, 0] += shift
            for i, row in enumerate(rows):
                await asyncio.sleep(max(0.0, window_start + (i + 0.5) * (WINDOW_S * 0.9 / PER_WINDOW) - time.time()))
                await score(clients, endpoint, row)
                sent += 1
            say("drift", f"window {w + 1}/{len(PHASES)} ({phase}, f0 shift {shift:+.1f}): {PER_WINDOW} requests")
    return first, time.time()


async def wait_for_drift(clients: Clients, monitor_id: str, last_window_start: float) -> list[DriftEvent]:
    deadline = time.monotonic() + 90
    async with progress("drift", "waiting for monitoring to close the windows"):
        while time.monotonic() < deadline:
            metrics = await clients.monitoring.ListDriftMetrics(
                mpb.ListDriftMetricsRequest(monitor_id=monitor_id, feature=FEATURES[0]), metadata=clients.md
            )
            if any(m.window_start.seconds >= int(last_window_start) for m in metrics.metrics):
                break
            await asyncio.sleep(1)
    events = await clients.monitoring.ListDriftEvents(
        mpb.ListDriftEventsRequest(monitor_id=monitor_id), metadata=clients.md
    )
    return list(events.events)


async def inference_records_since(clients: Clients, endpoint: str, since: float) -> list:
    """Every record of the endpoint from `since` on, page after page."""
    request = mpb.ListInferenceRecordsRequest(endpoint=endpoint)
    request.start_time.FromNanoseconds(int(since * 1e9))
    records: list = []
    while True:
        reply = await clients.monitoring.ListInferenceRecords(request, metadata=clients.md)
        records += reply.records
        if not reply.page.next_page_token:
            return records
        request.page.page_token = reply.page.next_page_token


async def render_png(clients: Clients, monitor_id: str, out: Path) -> Path:
    """The drift picture, drawn by monitoring's own plot module from its gRPC API."""
    from services.monitoring import plot

    monitor, metrics, events = await plot.load_monitor(clients.monitoring, clients.md, monitor_id)
    out.parent.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(plot.render, monitor, metrics, events, out)
    return out


async def drift_act(clients: Clients, endpoint: str, reference: np.ndarray, scores: np.ndarray, out: Path) -> None:
    monitor = await create_monitor(clients, endpoint, reference, scores)
    say(
        "drift",
        f"monitor {monitor.monitor_id} on {endpoint}: {', '.join(FEATURES)}, {WINDOW_S} s windows, "
        "baseline = the training data, wasserstein threshold 0.5",
    )
    first, _ = await send_traffic(clients, endpoint, seed=int(time.time()))
    last_window = (int(first) // WINDOW_S + len(PHASES) - 1) * WINDOW_S
    events = await wait_for_drift(clients, monitor.monitor_id, last_window)
    logged = await inference_records_since(clients, endpoint, first)
    by_version = sorted({r.model_version for r in logged})
    say(
        "drift",
        f"monitoring's inference table (read over gRPC) holds {len(logged)} of the {len(PHASES) * PER_WINDOW} "
        f"requests just sent, served by version(s) {', '.join(by_version)}",
    )
    if not events:
        raise StepSkipped(f"no drift event for monitor {monitor.monitor_id} (windows may not have closed yet)")
    for e in events:
        say(
            "drift",
            f"{DriftEvent.Kind.Name(e.kind)}: {e.feature} {e.statistic}={e.value:.3f} "
            f"{'>' if e.kind == DriftEvent.DRIFT_DETECTED else '<='} {e.threshold} "
            f"in window {time.strftime('%H:%M:%S', time.gmtime(e.window_start.seconds))} UTC "
            f"(vs {DriftEvent.Comparison.Name(e.comparison).lower()})",
        )
    try:
        png = await render_png(clients, monitor.monitor_id, out)
    except Exception as exc:  # noqa: BLE001 - the chart is monitoring's code; say what broke and go on
        raise StepSkipped(f"monitoring's plot could not draw the chart: {type(exc).__name__}: {exc}") from exc
    say("drift", f"drift chart written to {png}")
