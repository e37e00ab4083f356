"""``cdp run``: the long-lived service — ingest, plus builds on a schedule.

One process is the database's only writer (DuckDB allows no other), so ingest and
the scheduled builds share it: the consumer runs on the main thread, APScheduler's
jobs on a background thread, each through its own cursor. A build computes in its
own temp tables and writes, in one short transaction at the end, only tables ingest
does not write, so ingestion keeps committing while it runs.

Two jobs, both from ``[schedule]``: a profile refresh every ``refresh_minutes`` and
the nightly full build on ``nightly_cron`` in ``timezone``, followed by the export
of every segment to its destinations. The segments file is loaded (and every rule
checked) when the service starts, not when the nightly job first needs it. Jobs have fixed ids,
never overlap (``max_instances=1``; a lock also keeps the two jobs apart), missed
runs are coalesced into one, and a run may start up to ``misfire_grace_s`` late
(APScheduler's default of 1 s would skip a nightly build after any hiccup).
"""

from __future__ import annotations

import logging
import threading

import duckdb
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from cdp.ingest.consumer import EventConsumer, IngestStats
from cdp.processing.build import run_build
from cdp.processing.export import run_export
from cdp.processing.segment_config import SegmentConfig, load_segment_config
from cdp.settings import Settings

log = logging.getLogger(__name__)


def make_scheduler(
    settings: Settings, con: duckdb.DuckDBPyConnection, segments: SegmentConfig | None = None
) -> BackgroundScheduler:
    schedule = settings.schedule
    segments = segments or load_segment_config(settings)
    scheduler = BackgroundScheduler(
        timezone=schedule.timezone,
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": schedule.misfire_grace_s,
        },
    )
    one_at_a_time = threading.Lock()

    def build(kind: str) -> None:
        with one_at_a_time:
            cursor = con.cursor()
            try:
                report = run_build(cursor, settings, segments=segments)
                log.info(
                    "%s build %d succeeded: %d customers in %.1f s",
                    kind, report.build_id, report.customers, report.seconds,
                )  # fmt: skip
                if kind == "nightly":
                    exported = run_export(cursor, settings, segments)
                    log.info(
                        "nightly export as of %s: %d deliveries, %d failed",
                        exported.as_of, len(exported.results), len(exported.failed),
                    )  # fmt: skip
            except Exception:
                log.exception("%s job failed (recorded in builds / export_runs)", kind)
            finally:
                cursor.close()

    scheduler.add_job(
        build, IntervalTrigger(seconds=schedule.refresh_minutes * 60),
        id="profile-refresh", name="profile refresh", args=["refresh"],
    )  # fmt: skip
    scheduler.add_job(
        build, CronTrigger.from_crontab(schedule.nightly_cron, timezone=schedule.timezone),
        id="nightly-build", name="nightly full build", args=["nightly"],
    )  # fmt: skip
    return scheduler


def run_service(
    settings: Settings, con: duckdb.DuckDBPyConnection, stop: threading.Event
) -> IngestStats:
    """Ingest until ``stop`` is set, with the build jobs running alongside."""
    scheduler = make_scheduler(settings, con, load_segment_config(settings))
    scheduler.start()
    try:
        return EventConsumer(settings, con, stop=stop).run()
    finally:
        # Wait for a running build to finish rather than abandon its work.
        scheduler.shutdown(wait=True)
