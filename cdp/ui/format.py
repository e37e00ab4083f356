"""Jinja filters: numbers, money, dates and shares as a person reads them."""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from typing import Any

_FORMULA_START = ("=", "@", "\t", "\r")
_SIGNED_NUMBER = re.compile(r"[+-][0-9 ().-]*")


def spreadsheet_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text rather than runs: a text starting with
    = or @ (or + or -, unless a plain signed number or phone number such as
    +44 20 7946 0018), a tab or a carriage return gets a leading apostrophe (OWASP's
    advice against CSV injection). Ids and emails are whatever an event sender chose,
    and the members CSV is made to be opened in a spreadsheet."""
    if not isinstance(value, str) or not value:
        return value
    if value.startswith(_FORMULA_START) or (
        value[0] in "+-" and not _SIGNED_NUMBER.fullmatch(value)
    ):
        return "'" + value
    return value


def number(value: Any, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{float(value):,.{digits}f}"


def money(value: Any) -> str:
    return "—" if value is None else f"{float(value):,.2f}"


def when(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def day(value: Any) -> str:
    if value is None:
        return "—"
    return value.strftime("%Y-%m-%d") if isinstance(value, date | datetime) else str(value)


def share(value: Any) -> str:
    return "—" if value is None else f"{float(value):.0%}"


def yes_no(value: Any) -> str:
    return {True: "yes", False: "no"}.get(value, "not stated")


def sparkline(values: list[Any] | None, width: int = 120, height: int = 24) -> str:
    """An inline SVG polyline of a trend (the caller marks it safe: numbers only)."""
    points = [float(v) if isinstance(v, int | float | Decimal) else 0.0 for v in values or []]
    if len(points) < 2:
        return ""  # one build: no trend to draw yet
    top = max(points) or 1.0
    step = width / (len(points) - 1)
    coords = " ".join(
        f"{i * step:.1f},{height - 2 - (v / top) * (height - 4):.1f}" for i, v in enumerate(points)
    )
    return (
        f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="trend"><polyline points="{coords}" /></svg>'
    )


FILTERS = {
    "number": number,
    "money": money,
    "when": when,
    "day": day,
    "share": share,
    "yes_no": yes_no,
    "sparkline": sparkline,
}
