"""``cdp run``: the long-lived service — ingest, plus builds on a schedule.

One process is the database's only writer (DuckDB allows no other), so ingest and
the scheduled builds share it: the consumer runs on the main thread, APScheduler's
jobs on a background thread, each through its own cursor. A build computes in its
own temp tables and writes, in one short transaction at the end, only tables ingest
does not write, so ingestion keeps committing while it runs.

Two jobs, both from ``[schedule]``: a profile refresh every ``refresh_minutes`` and
the nightly full build on ``nightly_cron`` in ``timezone``, followed by the export
of every segment to its destinations. The segments file is loaded (and every rule
checked) when the service starts, not when the nightly job first needs it. Every
build publishes the analyst database and the HTML report (``cdp.processing.pipeline``),
and the service builds once as soon as ingest has caught up with the backlog, so
analysts do not wait for the first refresh. Jobs have fixed ids,
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
from cdp.processing.export import run_export
from cdp.processing.pipeline import build_and_publish
from cdp.processing.segment_config import SegmentConfig, load_segment_config
from cdp.settings import Settings

log = logging.getLogger(__name__)


def make_scheduler(
    settings: Settings,
    con: duckdb.DuckDBPyConnection,
    segments: SegmentConfig | None = None,
    caught_up: threading.Event | None = None,
    stop: threading.Event | None = None,
) -> BackgroundScheduler:
    """The service's jobs; with ``caught_up``, also a first build once it is set."""
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
                published = build_and_publish(cursor, settings, segments)
                report = published.build
                log.info(
                    "%s build %d succeeded: %d customers in %.1f s; analyst database %s",
                    kind, report.build_id, report.customers, report.seconds,
                    published.analyst.path if published.analyst else "unchanged",
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
    if caught_up is not None:

        def first_build() -> None:
            while not caught_up.wait(timeout=1.0):
                if stop is not None and stop.is_set():
                    return
            build("first")

        scheduler.add_job(first_build, id="first-build", name="first build once caught up")
    return scheduler


def run_service(
    settings: Settings, con: duckdb.DuckDBPyConnection, stop: threading.Event
) -> IngestStats:
    """Ingest until ``stop`` is set, with the build jobs running alongside."""
    segments = load_segment_config(settings)
    consumer = EventConsumer(settings, con, stop=stop)
    scheduler = make_scheduler(settings, con, segments, consumer.caught_up, stop)
    scheduler.start()
    try:
        return consumer.run()
    finally:
        # Wait for a running build to finish rather than abandon its work.
        scheduler.shutdown(wait=True)
