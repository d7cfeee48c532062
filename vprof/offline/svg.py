"""Inline SVG charts for the HTML report: no JavaScript library, no network.

Each chart is an <svg class="chart"> with one <path> per series, so a test
in a real browser can check that every chart drew something.
"""

from __future__ import annotations

from html import escape

import pandas as pd

W, H = 640, 220
PAD_L, PAD_R, PAD_T, PAD_B = 48, 150, 24, 28

COLORS = {
    "privileged": "#d62728",
    "memory": "#9467bd",
    "io": "#1f77b4",
    "context_switch": "#ff7f0e",
    "unclassified": "#7f7f7f",
    "guest": "#2ca02c",
    "in_kvm_run": "#98df8a",
    "kernel_privileged": "#ff9896",
    "kernel_memory": "#c5b0d5",
    "kernel_io": "#aec7e8",
    "kernel_context_switch": "#ffbb78",
    "kernel_unclassified": "#c7c7c7",
    "vmm_userspace": "#17becf",
    "runqueue": "#e377c2",
    "halted": "#dbdb8d",
    "unattributed": "#eeeeee",
    "before": "#8c8c8c",
    "after": "#1f77b4",
}


def _color(name: str, i: int) -> str:
    palette = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
    return COLORS.get(name, palette[i % len(palette)])


def _frame(title: str, body: str, y_max: float, legend: list[str], label: str) -> str:
    plot_w, plot_h = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    ticks = []
    for k in range(5):
        v = y_max * k / 4
        y = PAD_T + plot_h - plot_h * k / 4
        ticks.append(
            f'<line x1="{PAD_L}" x2="{PAD_L + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="#ddd"/><text x="{PAD_L - 4}" y="{y + 4:.1f}" text-anchor="end">'
            f"{v * 100:.0f}%</text>"
        )
    keys = "".join(
        f'<rect x="{W - PAD_R + 10}" y="{PAD_T + 14 * i}" width="10" height="10" '
        f'fill="{_color(n, i)}"/><text x="{W - PAD_R + 24}" y="{PAD_T + 9 + 14 * i}">'
        f"{escape(n)}</text>"
        for i, n in enumerate(legend)
    )
    return (
        f'<svg class="chart" data-chart="{escape(label)}" xmlns="http://www.w3.org/2000/svg" '
        f'width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-size="10" '
        f'font-family="sans-serif"><title>{escape(title)}</title>'
        f'<text x="{PAD_L}" y="14" font-size="12" font-weight="bold">{escape(title)}</text>'
        f"{''.join(ticks)}{body}{keys}</svg>"
    )


def stacked_area(wide: pd.DataFrame, title: str, label: str) -> str:
    """Series (columns) stacked over intervals (index), as shares of 1."""
    wide = wide.loc[:, (wide > 0).any(axis=0)] if not wide.empty else wide
    plot_w, plot_h = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    top = wide.cumsum(axis=1)
    y_max = max(float(top.iloc[:, -1].max()) if top.shape[1] else 0.0, 1e-9)
    y_max = min(1.0, y_max * 1.1) if y_max < 0.9 else 1.0
    n = len(wide.index)
    xs = [PAD_L + (plot_w * i / max(n - 1, 1)) for i in range(n)]

    def y(v: float) -> float:
        return PAD_T + plot_h - plot_h * min(v, y_max) / y_max

    paths, below = [], [0.0] * n
    for i, col in enumerate(wide.columns):
        above = top[col].tolist()
        pts = [f"{x:.1f},{y(v):.1f}" for x, v in zip(xs, above, strict=True)]
        back = [f"{x:.1f},{y(v):.1f}" for x, v in zip(reversed(xs), reversed(below), strict=True)]
        if n == 1:  # one interval: a bar across the plot
            pts = [f"{PAD_L},{y(above[0]):.1f}", f"{PAD_L + plot_w},{y(above[0]):.1f}"]
            back = [f"{PAD_L + plot_w},{y(below[0]):.1f}", f"{PAD_L},{y(below[0]):.1f}"]
        paths.append(
            f'<path class="series" d="M{" L".join(pts + back)} Z" fill="{_color(str(col), i)}">'
            f"<title>{escape(str(col))}</title></path>"
        )
        below = above
    axis = (
        f'<text x="{PAD_L}" y="{H - 8}">interval 1</text>'
        f'<text x="{PAD_L + plot_w}" y="{H - 8}" text-anchor="end">interval {n}</text>'
    )
    return _frame(title, "".join(paths) + axis, y_max, [str(c) for c in wide.columns], label)


def grouped_bars(wide: pd.DataFrame, title: str, label: str) -> str:
    """Bars per row (index) for each column (before/after), shares of 1."""
    plot_w, plot_h = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    y_max = max(float(wide.to_numpy().max()) * 1.1 if wide.size else 0.0, 0.01)
    groups, series = len(wide.index), len(wide.columns)
    gw = plot_w / max(groups, 1)
    bw = gw * 0.8 / max(series, 1)
    parts = []
    for g, row in enumerate(wide.index):
        for s, col in enumerate(wide.columns):
            v = float(wide.at[row, col])
            h = plot_h * v / y_max
            x = PAD_L + g * gw + gw * 0.1 + s * bw
            parts.append(
                f'<path class="series" d="M{x:.1f},{PAD_T + plot_h:.1f} h{bw:.1f} '
                f"v{-max(h, 0.5):.1f} "
                f'h{-bw:.1f} Z" fill="{_color(str(col), s)}"><title>{escape(str(row))} '
                f"{escape(str(col))}: {v * 100:.2f}%</title></path>"
            )
        parts.append(
            f'<text x="{PAD_L + g * gw + gw / 2:.1f}" y="{H - 8}" text-anchor="middle">'
            f"{escape(str(row))}</text>"
        )
    return _frame(title, "".join(parts), y_max, [str(c) for c in wide.columns], label)
