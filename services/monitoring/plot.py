"""`python -m services.monitoring.plot --monitor <id> --out drift.png`: a monitor's drift over time.

One row per watched feature (whole stream, against the baseline): each alarmed
statistic as a line with its threshold dashed, alarm periods shaded between the
detected and resolved events, and the window sizes underneath. Reads the
monitoring schema directly (TESSERA_PG_DSN, TESSERA_MONITORING_SCHEMA).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

from services.common.config import load  # noqa: E402
from services.common.db import Database  # noqa: E402
from services.monitoring.entities import BASELINE, DETECTED, MonitorSpec  # noqa: E402
from services.monitoring.settings import MonitoringSettings  # noqa: E402
from services.monitoring.store import MonitoringStore  # noqa: E402

COLORS = {"psi": "tab:blue", "wasserstein": "tab:orange", "js_distance": "tab:green", "ks": "tab:purple"}


def _time(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def render(spec: MonitorSpec, metrics: list[tuple], events: list[dict], out: Path, slice_name: str = "") -> None:
    """metrics: rows of store.list_drift_metrics; events: the monitor's drift events."""
    shown = [m for m in metrics if m[5] == BASELINE and m[2] == slice_name]
    series: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    counts: dict[float, int] = {}
    for start, end, _slice, feature, statistic, _cmp, value, _threshold, _drifted, count in shown:
        mid = (start + end) / 2
        if statistic in COLORS:
            series[feature][statistic].append((mid, value))
        counts[mid] = max(counts.get(mid, 0), count)
    features = [f.path for f in spec.features if f.path in series]
    if not features:
        raise SystemExit(f"monitor {spec.monitor_id}: no drift metrics yet (windows are evaluated as they close)")
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
            threshold = spec.thresholds.values.get(statistic)
            if threshold:
                ax.axhline(threshold, color=color, lw=1, ls="--", alpha=0.7)
        _shade_alarms(
            ax,
            [e for e in events if e["feature"] == feature and e["slice"] == slice_name and e["comparison"] == BASELINE],
        )
        ax.set_title(f"{feature}" + (f"  [{slice_name}]" if slice_name else ""), loc="left", fontsize=10)
        ax.set_ylabel("drift vs baseline")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8, ncol=4)
    bars = sorted(counts.items())
    width = spec.window_seconds / 86400 * 0.8
    axes[-1].bar([_time(t) for t, _ in bars], [c for _, c in bars], width=width, color="tab:gray")
    axes[-1].set_ylabel("records")
    clock = "%H:%M:%S" if spec.window_seconds < 60 else "%H:%M"
    axes[-1].xaxis.set_major_formatter(mdates.DateFormatter(clock, tz=dt.UTC))
    axes[-1].set_xlabel("window (UTC)")
    fig.suptitle(
        f"Drift of monitor {spec.monitor_id} on endpoint {spec.endpoint} "
        f"({spec.window_seconds}s windows; dashed: thresholds, red: alarms)",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _shade_alarms(ax, events: list[dict]) -> None:
    """One red span while any statistic of the feature is alarmed; a line where each alarm started."""
    active: set[str] = set()
    since = None
    for event in sorted(events, key=lambda e: (e["window_start"], e["kind"] != DETECTED)):
        if event["kind"] == DETECTED:
            ax.axvline(_time(event["window_start"]), color="red", lw=0.8, alpha=0.6)
            if not active:
                since = event["window_start"]
            active.add(event["statistic"])
        elif event["statistic"] in active:
            active.discard(event["statistic"])
            if not active:
                ax.axvspan(_time(since), _time(event["window_start"]), color="red", alpha=0.1)
    if active:
        # Still alarmed at the end: shade to the right edge (xlim is in matplotlib's date numbers).
        ax.axvspan(_time(since), mdates.num2date(ax.get_xlim()[1]), color="red", alpha=0.1)


async def load_monitor(settings: MonitoringSettings, monitor_id: str):
    db = await Database(settings.resolved_pg_dsn(), settings.monitoring_schema).open()
    try:
        store = MonitoringStore(db)
        monitors = await store.load_monitors()
        if monitor_id not in monitors:
            raise SystemExit(f"no monitor {monitor_id!r} in schema {settings.monitoring_schema}")
        metrics = await store.list_drift_metrics(monitor_id, None, None, "", "")
        return monitors[monitor_id][0], metrics, await store.list_events(monitor_id)
    finally:
        await db.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Render a monitor's drift over time as a PNG.")
    parser.add_argument("--monitor", required=True)
    parser.add_argument("--out", type=Path, default=Path("drift.png"))
    parser.add_argument("--slice", default="", help='a slice such as "labels.region=eu" (default: whole stream)')
    args = parser.parse_args(argv)
    spec, metrics, events = asyncio.run(load_monitor(load(MonitoringSettings), args.monitor))
    render(spec, metrics, events, args.out, args.slice)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
