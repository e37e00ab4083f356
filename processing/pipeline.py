"""A build as the service runs it: build, then publish the analyst database and the
report for it. Used by ``cdp build``, ``cdp run``'s jobs and ``cdp demo`` alike."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb

from cdp.processing.build import BuildReport, run_build
from cdp.processing.report import write_report
from cdp.processing.segment_config import SegmentConfig
from cdp.settings import Settings
from cdp.storage.analyst import AnalystPublish, analyst_path, publish_analyst_database

# Stages a build reports: six of the build, then the analyst database and the report.
STAGES = 8


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
    progress: Callable[[str], None] | None = None,
) -> PublishedBuild:
    """``progress`` hears the name of each of the ``STAGES`` stages as it starts."""
    say = progress or (lambda stage: None)
    build = run_build(con, settings, as_of, segments, progress=say)
    if not build.published_current:  # a backfill changes history tables only
        return PublishedBuild(build, None, None)
    say("analyst database")
    analyst = publish_analyst_database(con, settings)
    say("report")
    return PublishedBuild(build, analyst, write_report(analyst.path, report_path(settings)))
