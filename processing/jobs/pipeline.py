"""A build as the service runs it: build, then publish the analyst database and the
report for it (:func:`build_and_publish`, used by ``cdp build``), and the nightly run
that then exports every segment (:func:`build_publish_export`, used by ``cdp run``'s
scheduled jobs and by ``cdp demo``), so that both run the very same steps.

The build's row stays ``publishing`` until both are written, then says
``succeeded``, or ``publish_failed`` with the error (which still reaches the caller)
and whether the analyst database was published. A row left ``publishing`` (the process
died, or could not write the outcome) is settled by the next build from what it finds:
the analyst database in place holds the build, and the report is newer.
A full disk anywhere is a :class:`~cdp.errors.DiskError` naming the file that did not
fit (the live database, the analyst database or the report); the build's row says
``failed`` or ``publish_failed`` whenever there was room left to say so.
Each build first clears what a killed one left: see :func:`clean_up_interrupted_builds`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb

from cdp.processing.activation.export import ExportReport, run_export
from cdp.processing.jobs.kpis import StoreKpis, read_store_kpis
from cdp.processing.report.html import write_report
from cdp.processing.segmentation.config import SegmentConfig
from cdp.processing.stages.run import (
    BUILD_STAGES,
    BuildReport,
    finish_publishing,
    mark_interrupted_builds,
    run_build,
)
from cdp.settings import Settings
from cdp.storage.analyst import (
    AnalystPublish,
    builds_in_snapshot,
    publish_analyst_database,
    remove_publish_leftovers,
)
from cdp.storage.disk import storage_errors
from cdp.storage.paths import analyst_path, report_path

log = logging.getLogger(__name__)

# The stages ``build_and_publish`` reports: the build's, then its publish.
PUBLISH_STAGES = ("analyst database", "report")
STAGES = BUILD_STAGES + PUBLISH_STAGES


@dataclass(frozen=True)
class PublishedBuild:
    build: BuildReport
    analyst: AnalystPublish | None  # None for a backfill of an earlier as-of
    report: Path | None
    kpis: StoreKpis | None = None  # the store KPIs the build wrote for its as-of date


def clean_up_interrupted_builds(con: duckdb.DuckDBPyConnection, settings: Settings) -> list[Path]:
    """Mark the builds a killed process left unfinished and delete the files its
    publish left (a partial analyst snapshot copy — personal data — events parts no
    snapshot names, a half-written report); return the files and folders deleted.

    Every build starts with it (the one place it happens); the service can call it
    once when it starts. It must run only in the process that holds the live database
    for writing, and never while a build or publish of that process is under way."""
    analyst_published, report_written = _published_but_not_recorded(con, settings)
    mark_interrupted_builds(con, analyst_published=analyst_published, report_written=report_written)
    removed = remove_publish_leftovers(settings)
    report = report_path(settings)
    half_written = report.with_name(f".{report.name}.tmp")  # write_report's staging file
    if half_written.is_file():
        half_written.unlink()
        removed.append(half_written)
    return removed


def _published_but_not_recorded(
    con: duckdb.DuckDBPyConnection, settings: Settings
) -> tuple[set[int], set[int]]:
    """Of the builds left ``publishing``, those whose analyst database was published
    (the snapshot in place holds them: it copied ``builds`` while they published), and
    of those, the ones whose report was written after it."""
    publishing = {
        row[0]
        for row in con.execute("SELECT build_id FROM builds WHERE status = 'publishing'").fetchall()
    }
    if not publishing:
        return set(), set()
    analyst_published = publishing & builds_in_snapshot(settings)
    analyst, report = analyst_path(settings), report_path(settings)
    report_after = (
        analyst_published
        and report.exists()
        and report.stat().st_mtime_ns >= analyst.stat().st_mtime_ns
    )
    return analyst_published, analyst_published if report_after else set()


def build_and_publish(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    segments: SegmentConfig,
    as_of: datetime | None = None,
    progress: Callable[[str], None] | None = None,
) -> PublishedBuild:
    """``progress`` hears the name of each of the ``STAGES`` stages as it starts.
    The result carries the store KPIs the build wrote, read back as a dataclass."""
    say = progress or (lambda stage: None)
    live = settings.storage.db_path
    with storage_errors(live):  # a full disk: DiskError naming the live database
        clean_up_interrupted_builds(con, settings)
        build = run_build(
            con, settings, as_of, segments, progress=say, analyst_publish_follows=True
        )
    kpis = read_store_kpis(con, build.as_of.date())
    if not build.published_current:  # a backfill changes history tables only
        return PublishedBuild(build, None, None, kpis)
    analyst: AnalystPublish | None = None
    try:
        say(PUBLISH_STAGES[0])
        analyst = publish_analyst_database(con, settings)
        say(PUBLISH_STAGES[1])
        report = write_report(analyst.path, report_path(settings))
    except BaseException as exc:
        try:
            with storage_errors(live):
                finish_publishing(con, build.build_id, exc, analyst_published=analyst is not None)
        except Exception as failure:  # the publish's error is the one to raise
            # No traceback: on a full disk this is expected, and the caller prints the
            # publish's error. The row stays "publishing"; the next build marks it.
            log.warning(
                "could not record build %d as publish_failed (%s); the next build will",
                build.build_id,
                failure,
            )
        raise
    try:
        with storage_errors(live):
            finish_publishing(con, build.build_id)
    except Exception as failure:
        # Published all the same: the next build finds it in the analyst database
        # and records it as succeeded.
        log.warning(
            "build %d and its analyst database and report were published, but recording "
            "that failed (%s); the next build will",
            build.build_id,
            failure,
        )
        raise
    return PublishedBuild(build, analyst, report, kpis)


@dataclass(frozen=True)
class PipelineRun:
    published: PublishedBuild
    exported: ExportReport | None  # None when the run did not export


def build_publish_export(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    segments: SegmentConfig,
    *,
    export: bool = True,
    built: Callable[[PublishedBuild], bool] | None = None,
) -> PipelineRun:
    """A build as of now and its publish, then (with ``export``) the export of every
    segment to its destinations as of that build. ``built`` hears of the published
    build before the export starts and says whether to go on with it: a service that
    is stopping says no. Errors of either step reach the caller; a failed delivery is
    not an error but a result in the export report (and is retried at the next)."""
    published = build_and_publish(con, settings, segments)
    go_on = built(published) if built is not None else True
    if not export or not go_on:
        return PipelineRun(published, None)
    return PipelineRun(published, run_export(con, settings, segments))
