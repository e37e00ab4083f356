"""Small SVG charts for the HTML report: no JavaScript library, no network.

Each function returns one ``<svg>`` element as text, with every label escaped. The
charts are deliberately plain — bars, lines, heat cells — sized by a ``viewBox`` so
they scale with the page.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from html import escape

PALETTE = ("#2563eb", "#db2777", "#16a34a", "#ea580c", "#7c3aed", "#0891b2", "#ca8a04",
           "#dc2626", "#4b5563", "#65a30d", "#9333ea", "#0d9488", "#be123c", "#1d4ed8")  # fmt: skip


def _svg(width: int, height: int, body: list[str], label: str, grow: bool = True) -> str:
    # Charts grow with the page; small ones (heat grids, sparklines) keep their size.
    style = "" if grow else f' style="max-width:{width}px"'
    return (
        f'<svg class="chart-svg" viewBox="0 0 {width} {height}" role="img"{style} '
        f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">'
        + "".join(body)
        + "</svg>"
    )


def _text(
    x: float, y: float, text: str, anchor: str = "start", size: int = 11, **attrs: str
) -> str:
    extra = "".join(f' {key.replace("_", "-")}="{escape(value)}"' for key, value in attrs.items())
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}"{extra}>'
        f"{escape(text)}</text>"
    )


def fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if abs(value) >= 10_000:
        return f"{value / 1000:.0f}k"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}".rstrip("0").rstrip(".") if value % 1 else f"{value:.0f}"


def bar_chart(
    labels: Sequence[str], values: Sequence[float], title: str, value_suffix: str = ""
) -> str:
    """Horizontal bars, one per label, with the value printed at the end."""
    width, row, left = 640, 24, 180
    height = row * max(len(labels), 1) + 10
    top = max(values, default=0) or 1
    body = []
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = 5 + i * row
        length = (width - left - 70) * max(value, 0) / top
        body.append(_text(left - 6, y + 15, label[:28], "end"))
        body.append(
            f'<rect class="mark" x="{left}" y="{y + 3}" width="{max(length, 1):.1f}" '
            f'height="{row - 7}" fill="{PALETTE[0]}"><title>{escape(label)}: '
            f"{escape(fmt(value))}{escape(value_suffix)}</title></rect>"
        )
        body.append(_text(left + length + 6, y + 15, fmt(value) + value_suffix))
    return _svg(width, height, body, title)


_WIDTH, _HEIGHT, _LEFT, _BOTTOM = 640, 240, 50, 40


def _side_by_side(
    series: dict[str, Sequence[float]],
    slots: int,
    describe: Callable[[str, int, float], str],
    *,
    gap: float,
    inset: float,
    headroom: int,
    legend_step: int,
) -> tuple[list[str], float]:
    """The axis, one column per series in each of ``slots`` slots (``describe`` gives
    each its tooltip), and the legend; also the slot width, for the x labels."""
    top = max((max(values, default=0) for values in series.values()), default=0) or 1
    slot = (_WIDTH - _LEFT - 10) / max(slots, 1)
    bar = slot / (len(series) + gap)  # gap: the space between slots, in columns
    base = _HEIGHT - _BOTTOM
    body = [f'<line x1="{_LEFT}" y1="{base}" x2="{_WIDTH - 10}" y2="{base}" stroke="#9ca3af"/>']
    for s, (name, values) in enumerate(series.items()):
        for i, value in enumerate(values):
            h = (base - headroom) * max(value, 0) / top
            x = _LEFT + i * slot + (s + inset) * bar
            body.append(
                f'<rect class="mark" x="{x:.1f}" y="{base - h:.1f}" width="{bar:.1f}" '
                f'height="{max(h, 0.5):.1f}" fill="{PALETTE[s]}">'
                f"<title>{escape(describe(name, i, value))}</title></rect>"
            )
        legend = _LEFT + 10 + s * legend_step
        body.append(f'<rect x="{legend}" y="4" width="10" height="10" fill="{PALETTE[s]}"/>')
        body.append(_text(legend + 14, 13, name))
    body.append(_text(_LEFT - 6, 10 + headroom, fmt(top), "end"))
    return body, slot


def histogram(edges: Sequence[float], series: dict[str, Sequence[int]], title: str) -> str:
    """Counts per bin for one or more series, side by side; ``edges`` has bins + 1."""
    bins = len(edges) - 1
    body, slot = _side_by_side(
        series,
        bins,
        lambda name, i, count: f"{name} {fmt(edges[i])}–{fmt(edges[i + 1])}: {count:.0f}",
        gap=0.5,
        inset=0.0,
        headroom=20,
        legend_step=140,
    )
    for i in range(0, bins + 1, max(1, bins // 5)):
        body.append(_text(_LEFT + i * slot, _HEIGHT - _BOTTOM + 16, fmt(edges[i]), "middle"))
    return _svg(_WIDTH, _HEIGHT, body, title)


def column_chart(categories: Sequence[str], series: dict[str, Sequence[float]], title: str) -> str:
    """Vertical columns per category, one per series side by side, with a legend: for
    comparing series category by category (forecast vs actual per group)."""
    body, slot = _side_by_side(
        series,
        len(categories),
        lambda name, i, value: f"{name}, {categories[i]}: {fmt(value)}",
        gap=0.7,
        inset=0.35,
        headroom=30,
        legend_step=200,
    )
    for i, category in enumerate(categories):
        body.append(_text(_LEFT + (i + 0.5) * slot, _HEIGHT - _BOTTOM + 16, category, "middle"))
    return _svg(_WIDTH, _HEIGHT, body, title)


Cells = dict[tuple[str, str], tuple[float, str]]  # (row, column) -> (value, label)


def heatmap(
    rows: Sequence[str],
    columns: Sequence[str],
    cells: Cells,
    title: str,
    row_title: str,
    column_title: str,
) -> str:
    """A grid coloured by each cell's value (0..1 intensity) with a text label."""
    cell, left, top = 46, 90, 40
    width = left + cell * len(columns) + 10
    height = top + cell * len(rows) + 10
    values = [value for value, _ in cells.values()]
    low, high = min(values, default=0), max(values, default=1)
    span = (high - low) or 1
    body = [_text(left, 14, column_title, size=12, font_weight="bold")]
    for j, column in enumerate(columns):
        body.append(_text(left + j * cell + cell / 2, top - 6, column, "middle"))
    body.append(_text(6, top - 6, row_title, size=12, font_weight="bold"))
    for i, row in enumerate(rows):
        y = top + i * cell
        body.append(_text(left - 6, y + cell / 2 + 4, row, "end"))
        for j, column in enumerate(columns):
            if (row, column) not in cells:
                continue
            value, label = cells[(row, column)]
            shade = 0.12 + 0.88 * (value - low) / span
            body.append(
                f'<rect class="mark" x="{left + j * cell}" y="{y}" width="{cell - 2}" '
                f'height="{cell - 2}" fill="{PALETTE[0]}" fill-opacity="{shade:.2f}">'
                f"<title>{escape(row)} × {escape(column)}: {escape(label)}</title></rect>"
            )
            color = "#fff" if shade > 0.55 else "#111827"
            body.append(
                _text(
                    left + j * cell + cell / 2 - 1,
                    y + cell / 2 + 3,
                    label,
                    "middle",
                    size=10,
                    fill=color,
                )
            )
    return _svg(width, height, body, title, grow=False)


def line_chart(
    x_labels: Sequence[str], series: dict[str, Sequence[float | None]], title: str
) -> str:
    """One line per series over shared x labels (dates), with a legend."""
    width, left, bottom = 640, 50, 30
    legend_rows = (len(series) + 3) // 4
    height = 220 + legend_rows * 16
    plot_top = 10 + legend_rows * 16
    top = max((v for values in series.values() for v in values if v is not None), default=0) or 1
    step = (width - left - 20) / max(len(x_labels) - 1, 1)
    body = [
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - 10}" '
        f'y2="{height - bottom}" stroke="#9ca3af"/>'
    ]
    for s, (name, values) in enumerate(series.items()):
        color = PALETTE[s % len(PALETTE)]
        points = [
            (left + i * step, height - bottom - (height - bottom - plot_top) * v / top)
            for i, v in enumerate(values)
            if v is not None
        ]
        if len(points) == 1:
            x, y = points[0]
            body.append(f'<circle class="mark" cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>')
        elif points:
            path = " ".join(
                f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(points)
            )
            body.append(
                f'<path class="mark" d="{path}" fill="none" stroke="{color}" '
                f'stroke-width="2"><title>{escape(name)}</title></path>'
            )
        lx, ly = left + (s % 4) * 145, 10 + (s // 4) * 16
        body.append(f'<rect x="{lx}" y="{ly}" width="10" height="10" fill="{color}"/>')
        body.append(_text(lx + 14, ly + 9, name[:20]))
    for i in range(0, len(x_labels), max(1, len(x_labels) // 6)):
        body.append(_text(left + i * step, height - bottom + 16, x_labels[i], "middle"))
    body.append(_text(left - 6, plot_top + 8, fmt(top), "end"))
    return _svg(width, height, body, title)


def sparkline(values: Sequence[float | None], title: str) -> str:
    width, height = 120, 28
    points = [v for v in values if v is not None]
    if not points:
        return _svg(width, height, [], title, grow=False)
    low, high = min(points), max(points)
    span = (high - low) or 1
    step = (width - 6) / max(len(points) - 1, 1)
    coords = [
        (3 + i * step, height - 4 - (height - 8) * (v - low) / span) for i, v in enumerate(points)
    ]
    if len(coords) == 1:
        x, y = coords[0]
        return _svg(
            width,
            height,
            [f'<circle class="mark" cx="{x}" cy="{y}" r="2.5" fill="{PALETTE[0]}"/>'],
            title,
            grow=False,
        )
    path = " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(coords))
    return _svg(
        width,
        height,
        [f'<path class="mark" d="{path}" fill="none" stroke="{PALETTE[0]}" stroke-width="1.5"/>'],
        title,
        grow=False,
    )
