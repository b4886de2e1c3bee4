"""An inline SVG line chart of the node count through a pipeline (no plotting library).

The y axis is logarithmic: re-rolling takes VMamba-T from 77k to 7k nodes, and the later
passes' changes of a few hundred nodes would vanish on a linear axis.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 820, 250
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 22, 92  # room for the y labels and the slanted pass names


@dataclass
class ChartPoint:
    label: str    # "input" or the pass name
    nodes: int
    changed: bool  # drawn filled; unchanged passes hollow and grey


def _nice_ticks(low: float, high: float) -> list[int]:
    """1-2-5 ticks between low and high (inclusive), at most ~8 of them."""
    ticks = []
    for exponent in range(int(math.floor(math.log10(max(low, 1)))), int(math.ceil(math.log10(max(high, 1)))) + 1):
        for mantissa in (1, 2, 5):
            value = mantissa * 10 ** exponent
            if low <= value <= high:
                ticks.append(value)
    if len(ticks) > 8:
        ticks = [t for t in ticks if str(t)[0] in "15"]
    return ticks


def _format_count(value: int) -> str:
    if value >= 1000 and value % 1000 == 0:
        return f"{value // 1000}k"
    return f"{value:,}"


def node_count_svg(points: list[ChartPoint]) -> str:
    if not points:
        return ""
    counts = [max(point.nodes, 1) for point in points]
    low, high = min(counts), max(counts)
    log_low, log_high = math.log10(low) - 0.05, math.log10(high) + 0.05
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(index: int) -> float:
        return LEFT + (plot_width * index / (len(points) - 1) if len(points) > 1 else plot_width / 2)

    def y(value: int) -> float:
        return TOP + plot_height * (1 - (math.log10(max(value, 1)) - log_low) / (log_high - log_low))

    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" '
             f'role="img" aria-label="node count after each pass" xmlns="http://www.w3.org/2000/svg">']
    for tick in _nice_ticks(10 ** log_low, 10 ** log_high):
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}"/>')
        parts.append(f'<text class="ytick" x="{LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{_format_count(tick)}</text>')
    parts.append(f'<text class="axis-title" x="12" y="{TOP + plot_height / 2:.0f}" '
                 f'transform="rotate(-90 12 {TOP + plot_height / 2:.0f})" text-anchor="middle">nodes (log)</text>')
    path = " ".join(f"{'M' if i == 0 else 'L'}{x(i):.1f},{y(count):.1f}" for i, count in enumerate(counts))
    parts.append(f'<path class="line" d="{path}"/>')
    previous = None
    for index, point in enumerate(points):
        css = "point changed" if point.changed or index == 0 else "point unchanged"
        cx, cy = x(index), y(counts[index])
        title = escape(f"{index}. {point.label}: {point.nodes:,} nodes" if index else f"input: {point.nodes:,} nodes")
        parts.append(f'<circle class="{css}" cx="{cx:.1f}" cy="{cy:.1f}" r="4.5"><title>{title}</title></circle>')
        if point.nodes != previous:  # label where the count moved, not on every flat step
            parts.append(f'<text class="value" x="{cx:.1f}" y="{cy - 9:.1f}" text-anchor="middle">{point.nodes:,}</text>')
        previous = point.nodes
        label = escape(point.label if index == 0 else f"{index} {point.label}")
        base = HEIGHT - BOTTOM + 14
        parts.append(f'<text class="xtick{"" if point.changed or index == 0 else " dim"}" x="{cx:.1f}" y="{base}" '
                     f'text-anchor="end" transform="rotate(-35 {cx:.1f} {base})">{label}</text>')
    parts.append("</svg>")
    return "".join(parts)
