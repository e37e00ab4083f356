"""Month-end builds over a past year: the history a store running cdp for a year has.

Builds are point-in-time (``run_build`` with ``as_of``), so a store loaded all at
once can have its history made afterwards: one build at the end of each of the last
N months, oldest first. Each is the latest when it runs, so it writes everything a
build writes then — the dated trend tables (store KPIs, segment sizes, profile
history, model runs, RFM summaries) and the membership stays that start and end
month by month — as if the scheduler had built them on those days. ``cdp demo``
runs it before its current build, so the report's and the explorer's trends have a
year of points.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta

import duckdb

from cdp.processing.as_of import end_of_day
from cdp.processing.segmentation.config import SegmentConfig
from cdp.processing.stages.run import BuildReport, run_build
from cdp.settings import Settings


def month_ends(before: datetime, months: int) -> list[datetime]:
    """The last moments (UTC) of the ``months`` whole months before ``before``'s month,
    oldest first."""
    ends: list[datetime] = []
    day = date(before.year, before.month, 1) - timedelta(days=1)  # last day of the previous
    for _ in range(months):
        ends.append(end_of_day(day))
        day = date(day.year, day.month, 1) - timedelta(days=1)
    return ends[::-1]


def backfill_month_ends(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    segments: SegmentConfig,
    *,
    before: datetime,
    months: int = 12,
    built: Callable[[BuildReport], None] | None = None,
) -> list[BuildReport]:
    """One build per month end, oldest first; ``built`` hears of each."""
    reports = []
    for as_of in month_ends(before, months):
        report = run_build(con, settings, as_of, segments)
        reports.append(report)
        if built is not None:
            built(report)
    return reports
