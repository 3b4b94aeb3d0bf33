"""A chart of paired differences, as inline SVG rendered on the server (no chart library, no script)."""

from __future__ import annotations

from html import escape

WIDTH, HEIGHT, PAD = 640, 200, 36
MAX_BARS = 2_000


def paired_differences_svg(metric: str, rows: list[float], low: float, high: float, estimate: float) -> str:
    """Per-row differences (candidate - baseline) as bars around zero, with the interval of the mean
    difference as a band and the estimate as a line. Accessible: a title and a description."""
    rows = [r for r in rows[:MAX_BARS] if r == r]  # NaN (unmeasured) rows are not drawn
    span = max([abs(v) for v in rows] + [abs(low), abs(high)])
    if span < 1e-9:  # every difference is zero: a unit scale reads better than ±1e-09
        span = 1.0
    mid = HEIGHT / 2
    scale = (HEIGHT / 2 - PAD / 2) / span

    def y(value: float) -> float:
        return mid - value * scale

    plot_w = WIDTH - 2 * PAD
    bar_w = plot_w / max(len(rows), 1)
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}"'
        f' aria-labelledby="chart-{escape(metric)}-t chart-{escape(metric)}-d" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="chart-{escape(metric)}-t">Paired differences for {escape(metric)}</title>',
        f'<desc id="chart-{escape(metric)}-d">{len(rows)} rows, candidate minus baseline; mean difference'
        f" {estimate:.4g}, interval [{low:.4g}, {high:.4g}].</desc>",
        f'<rect x="{PAD}" y="{y(high):.1f}" width="{plot_w}" height="{max(y(low) - y(high), 1):.1f}"'
        ' fill="#8fb3e8" fill-opacity="0.35"/>',
    ]
    for i, value in enumerate(rows):
        top, bottom = sorted((y(value), mid))
        colour = "#1a7f37" if value > 0 else "#b42318"
        parts.append(
            f'<rect x="{PAD + i * bar_w:.2f}" y="{top:.1f}" width="{max(bar_w * 0.8, 0.5):.2f}"'
            f' height="{max(bottom - top, 0.5):.1f}" fill="{colour}"/>'
        )
    parts += [
        f'<line x1="{PAD}" x2="{WIDTH - PAD}" y1="{mid}" y2="{mid}" stroke="#444" stroke-width="1"/>',
        f'<line x1="{PAD}" x2="{WIDTH - PAD}" y1="{y(estimate):.1f}" y2="{y(estimate):.1f}" stroke="#1f4e9c"'
        ' stroke-width="2" stroke-dasharray="6 3"/>',
        f'<text x="4" y="{y(span) + 4:.1f}" font-size="11">{span:+.3g}</text>',
        f'<text x="4" y="{mid + 4}" font-size="11">0</text>',
        f'<text x="4" y="{y(-span) + 4:.1f}" font-size="11">{-span:+.3g}</text>',
        f'<text x="{PAD}" y="{HEIGHT - 4}" font-size="11">rows (dataset order) →</text>',
        "</svg>",
    ]
    return "".join(parts)
