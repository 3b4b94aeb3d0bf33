"""`python -m services.monitoring.plot --monitor <id> --out drift.png`: a monitor's drift over time.

One row per watched feature (whole stream, against the baseline): each alarmed
statistic as a line with its threshold dashed, alarm periods shaded between the
detected and resolved events, and the window sizes underneath. Reads through
monitoring's gRPC API (GetMonitor, ListDriftMetrics, ListDriftEvents), so the
caller needs SELECT on the monitor: `--address` (TESSERA_MONITORING_ADDRESS) and
the caller's token (TESSERA_SERVICE_TOKEN).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
from collections import defaultdict
from pathlib import Path

import grpc
import matplotlib
from tessera.events.v1.drift_pb2 import DriftEvent
from tessera.monitoring.v1 import monitoring_pb2 as pb
from tessera.monitoring.v1 import monitoring_pb2_grpc

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

from services.common.auth import bearer  # noqa: E402
from services.common.config import CommonSettings, load  # noqa: E402
from services.common.errors import FailedPrecondition  # noqa: E402

COLORS = {"psi": "tab:blue", "wasserstein": "tab:orange", "js_distance": "tab:green", "ks": "tab:purple"}


def _time(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def render(
    monitor: pb.Monitor, metrics: list[pb.DriftMetric], events: list[DriftEvent], out: Path, slice_name: str = ""
) -> None:
    """Draw the monitor's drift against its baseline; FailedPrecondition while nothing was evaluated yet."""
    shown = [m for m in metrics if m.comparison == DriftEvent.BASELINE and m.slice == slice_name]
    series: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    counts: dict[float, int] = {}
    for m in shown:
        mid = (m.window_start.ToNanoseconds() + m.window_end.ToNanoseconds()) / 2e9
        if m.statistic in COLORS:
            series[m.feature][m.statistic].append((mid, m.value))
        counts[mid] = max(counts.get(mid, 0), m.count)
    features = [f.path for f in monitor.features if f.path in series]
    if not features:
        raise FailedPrecondition(
            f"monitor {monitor.monitor_id}: no drift metrics yet (windows are evaluated as they close)"
        )
    fig, axes = plt.subplots(
        len(features) + 1,
        1,
        figsize=(11, 2.6 * len(features) + 2),
        sharex=True,
        gridspec_kw={"height_ratios": [3] * len(features) + [1.4]},
    )
    for ax, feature in zip(axes, features, strict=False):
        for statistic, points in sorted(series[feature].items()):
            points.sort()
            color = COLORS[statistic]
            ax.plot(
                [_time(t) for t, _ in points],
                [v for _, v in points],
                marker="o",
                ms=3,
                lw=1.4,
                color=color,
                label=statistic,
            )
            threshold = monitor.thresholds.values.get(statistic)
            if threshold:
                ax.axhline(threshold, color=color, lw=1, ls="--", alpha=0.7)
        _shade_alarms(
            ax,
            [
                e
                for e in events
                if e.feature == feature and e.slice == slice_name and e.comparison == DriftEvent.BASELINE
            ],
        )
        ax.set_title(f"{feature}" + (f"  [{slice_name}]" if slice_name else ""), loc="left", fontsize=10)
        ax.set_ylabel("drift vs baseline")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8, ncol=4)
    bars = sorted(counts.items())
    width = monitor.window_seconds / 86400 * 0.8
    axes[-1].bar([_time(t) for t, _ in bars], [c for _, c in bars], width=width, color="tab:gray")
    axes[-1].set_ylabel("records")
    clock = "%H:%M:%S" if monitor.window_seconds < 60 else "%H:%M"
    axes[-1].xaxis.set_major_formatter(mdates.DateFormatter(clock, tz=dt.UTC))
    axes[-1].set_xlabel("window (UTC)")
    fig.suptitle(
        f"Drift of monitor {monitor.monitor_id} on endpoint {monitor.endpoint} "
        f"({monitor.window_seconds}s windows; dashed: thresholds, red: alarms)",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _shade_alarms(ax, events: list[DriftEvent]) -> None:
    """One red span while any statistic of the feature is alarmed; a line where each alarm started."""
    active: set[str] = set()
    since = None
    for event in sorted(events, key=lambda e: (e.window_start.seconds, e.kind != DriftEvent.DRIFT_DETECTED)):
        start = event.window_start.ToNanoseconds() / 1e9
        if event.kind == DriftEvent.DRIFT_DETECTED:
            ax.axvline(_time(start), color="red", lw=0.8, alpha=0.6)
            if not active:
                since = start
            active.add(event.statistic)
        elif event.statistic in active:
            active.discard(event.statistic)
            if not active:
                ax.axvspan(_time(since), _time(start), color="red", alpha=0.1)
    if active:
        # Still alarmed at the end: shade to the right edge (xlim is in matplotlib's date numbers).
        ax.axvspan(_time(since), mdates.num2date(ax.get_xlim()[1]), color="red", alpha=0.1)


async def load_monitor(
    stub: monitoring_pb2_grpc.MonitoringServiceStub, metadata, monitor_id: str
) -> tuple[pb.Monitor, list[pb.DriftMetric], list[DriftEvent]]:
    """The monitor, its drift metrics and its events, read through monitoring's API."""
    monitor = await stub.GetMonitor(pb.GetMonitorRequest(monitor_id=monitor_id), metadata=metadata)
    metrics = await stub.ListDriftMetrics(pb.ListDriftMetricsRequest(monitor_id=monitor_id), metadata=metadata)
    events = await stub.ListDriftEvents(pb.ListDriftEventsRequest(monitor_id=monitor_id), metadata=metadata)
    return monitor, list(metrics.metrics), list(events.events)


async def draw(address: str, token: str, monitor_id: str, out: Path, slice_name: str = "") -> Path:
    """Read the monitor from the service at `address` and write its drift PNG to `out`."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = monitoring_pb2_grpc.MonitoringServiceStub(channel)
        monitor, metrics, events = await load_monitor(stub, bearer(token), monitor_id)
    out.parent.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(render, monitor, metrics, events, out, slice_name)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Render a monitor's drift over time as a PNG.")
    parser.add_argument("--monitor", required=True)
    parser.add_argument("--out", type=Path, default=Path("drift.png"))
    parser.add_argument("--slice", default="", help='a slice such as "labels.region=eu" (default: whole stream)')
    parser.add_argument(
        "--address", default=os.environ.get("TESSERA_MONITORING_ADDRESS", "127.0.0.1:50056"), help="monitoring gRPC"
    )
    args = parser.parse_args(argv)
    token = load(CommonSettings).service_token
    try:
        out = asyncio.run(draw(args.address, token, args.monitor, args.out, args.slice))
    except grpc.aio.AioRpcError as exc:
        raise SystemExit(f"monitoring at {args.address}: {exc.code().name}: {exc.details()}") from exc
    except FailedPrecondition as exc:
        raise SystemExit(str(exc)) from exc
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
