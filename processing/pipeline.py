"""A build as the service runs it: build, then publish the analyst database and the
report for it. Used by ``cdp build``, ``cdp run``'s jobs and ``cdp demo`` alike."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb

from cdp.processing.build import BuildReport, run_build
from cdp.processing.report import write_report
from cdp.processing.segment_config import SegmentConfig
from cdp.settings import Settings
from cdp.storage.analyst import AnalystPublish, analyst_path, publish_analyst_database


@dataclass(frozen=True)
class PublishedBuild:
    build: BuildReport
    analyst: AnalystPublish | None  # None for a backfill of an earlier as-of
    report: Path | None


def report_path(settings: Settings) -> Path:
    """``<db name>.report.html`` beside the analyst database."""
    return analyst_path(settings).with_name(f"{settings.storage.db_path.stem}.report.html")


def build_and_publish(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    segments: SegmentConfig,
    as_of: datetime | None = None,
) -> PublishedBuild:
    build = run_build(con, settings, as_of, segments)
    if not build.published_current:  # a backfill changes history tables only
        return PublishedBuild(build, None, None)
    analyst = publish_analyst_database(con, settings)
    return PublishedBuild(build, analyst, write_report(analyst.path, report_path(settings)))
