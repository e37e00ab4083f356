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
build publishes the analyst database and the HTML report (``cdp.processing.jobs.pipeline``),
and the service builds once as soon as ingest has caught up with the backlog, so
analysts do not wait for the first refresh. Until then, while the broker answers,
the scheduled builds are skipped: they would build, publish (and at night export) a
part of the backlog. With the broker unreachable there is nothing to wait for, and
they build what is stored. Jobs have fixed ids,
never overlap (``max_instances=1``; a lock also keeps the two jobs apart), missed
runs are coalesced into one, and a run may start up to ``misfire_grace_s`` late
(APScheduler's default of 1 s would skip a nightly build after any hiccup).

A job that fails for a reason cdp knows (a ``CdpError``: the disk is full, a
destination did not confirm; or the environment: a file it may not write, memory
running out) is recorded and logged, and the next run tries again;
the service goes on ingesting. Anything else is a bug, and a service that carries on
after one is half-alive: the job reports it through :class:`ServiceJobs`, and the
service (``cdp.service``) exits non-zero.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import duckdb
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from cdp.errors import CdpError
from cdp.processing.jobs.pipeline import PublishedBuild, build_publish_export
from cdp.processing.segmentation.config import SegmentConfig, load_segment_config
from cdp.settings import Settings
from cdp.storage.database import raised_memory_limit

log = logging.getLogger(__name__)

# Failures a job records and the next run retries: cdp's own errors (a full disk, a
# destination that did not confirm) and what the environment does to files and
# memory. Anything else is a bug, and stops the service.
_EXPECTED_FAILURES = (CdpError, OSError, duckdb.IOException, duckdb.OutOfMemoryException)

# The scheduler runs a heartbeat job this often; the service watches it.
HEARTBEAT_EVERY_S = 5.0


@dataclass(frozen=True)
class JobOutcome:
    """How the last build or export went, for ``/metrics``."""

    succeeded: bool
    seconds: float
    finished_at: float  # time.time()


@dataclass
class ServiceJobs:
    """What the jobs tell the service, and the handle it has on them.

    ``fatal`` is set (once) by a job that failed in a way cdp does not expect; the
    service then stops. ``interrupt()`` cancels the query of a running build, so that
    a failing service exits within seconds instead of after a long build.
    """

    last_build: JobOutcome | None = None
    last_export: JobOutcome | None = None
    fatal: str | None = None
    failed: threading.Event = field(default_factory=threading.Event)
    # When the scheduler last ran its heartbeat job: a scheduler whose thread died
    # runs nothing, and nothing else would tell.
    scheduler_beat: float = field(default_factory=time.monotonic)
    _running: duckdb.DuckDBPyConnection | None = None

    def fail(self, reason: str) -> None:
        if self.fatal is None:
            self.fatal = reason
        self.failed.set()

    @contextlib.contextmanager
    def running(self, cursor: duckdb.DuckDBPyConnection) -> Iterator[None]:
        """While a job's queries run on ``cursor``, ``interrupt()`` cancels them."""
        self._running = cursor
        try:
            yield
        finally:
            self._running = None

    def interrupt(self) -> None:
        """Cancel the query running now (DuckDB forgets an interrupt sent between
        queries, so a caller that wants the job gone repeats it until it is)."""
        running = self._running
        if running is not None:
            running.interrupt()

    @property
    def job_running(self) -> bool:
        return self._running is not None


def make_scheduler(
    settings: Settings,
    con: duckdb.DuckDBPyConnection,
    segments: SegmentConfig | None = None,
    caught_up: threading.Event | None = None,
    stop: threading.Event | None = None,
    jobs: ServiceJobs | None = None,
    broker_reachable: Callable[[], bool] = lambda: True,
) -> BackgroundScheduler:
    """The service's jobs; with ``caught_up``, also a first build once it is set, and
    no scheduled build before it while ``broker_reachable()``."""
    schedule = settings.schedule
    segments = segments or load_segment_config(settings)
    jobs = jobs if jobs is not None else ServiceJobs()
    scheduler = BackgroundScheduler(
        timezone=schedule.timezone,
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": schedule.misfire_grace_s,
        },
    )
    one_at_a_time = threading.Lock()
    memory = settings.storage.memory_limit  # a build's; ingest runs with less

    def reading_backlog() -> bool:
        return caught_up is not None and not caught_up.is_set() and broker_reachable()

    def build(kind: str) -> None:
        if kind != "first" and reading_backlog():
            log.info("%s build skipped: ingest is still reading the backlog", kind)
            return
        with one_at_a_time:
            if jobs.failed.is_set():
                return
            cursor = con.cursor()
            step, started = "build", time.monotonic()

            def built(published: PublishedBuild) -> bool:
                nonlocal step, started
                jobs.last_build = JobOutcome(True, time.monotonic() - started, time.time())
                report = published.build
                analyst = published.analyst.path if published.analyst else "unchanged"
                log.info(
                    "%s build %d succeeded: %d customers in %.1f s; analyst database %s",
                    *(kind, report.build_id, report.customers, report.seconds, analyst),
                )
                step, started = "export", time.monotonic()
                return not jobs.failed.is_set()

            try:
                with (
                    jobs.running(cursor),
                    raised_memory_limit(cursor, memory, back_to=settings.ingest.memory_limit),
                ):
                    run = build_publish_export(
                        cursor, settings, segments, export=kind == "nightly", built=built
                    )
                if run.exported is not None:
                    exported = run.exported
                    jobs.last_export = JobOutcome(
                        not exported.failed, time.monotonic() - started, time.time()
                    )
                    log.info(
                        "nightly export as of %s: %d deliveries, %d failed",
                        *(exported.as_of, len(exported.results), len(exported.failed)),
                    )
            except _EXPECTED_FAILURES as exc:
                _record_failure(jobs, step, started)
                log.error("%s %s failed (recorded in builds / export_runs): %s", kind, step, exc)
            except Exception as exc:
                _record_failure(jobs, step, started)
                if jobs.failed.is_set():  # cancelled by interrupt(): the service is stopping
                    return
                log.exception("%s %s failed unexpectedly", kind, step)
                jobs.fail(f"the {kind} {step} job failed unexpectedly: {type(exc).__name__}: {exc}")
            finally:
                cursor.close()

    def heartbeat() -> None:
        jobs.scheduler_beat = time.monotonic()

    scheduler.add_job(
        heartbeat, IntervalTrigger(seconds=HEARTBEAT_EVERY_S), id="heartbeat", name="heartbeat"
    )
    refresh = IntervalTrigger(seconds=schedule.refresh_minutes * 60)
    nightly = CronTrigger.from_crontab(schedule.nightly_cron, timezone=schedule.timezone)
    scheduler.add_job(
        build, refresh, id="profile-refresh", name="profile refresh", args=["refresh"]
    )
    scheduler.add_job(
        build, nightly, id="nightly-build", name="nightly full build", args=["nightly"]
    )
    if caught_up is not None:

        def first_build() -> None:
            while not caught_up.wait(timeout=1.0):
                if (stop is not None and stop.is_set()) or jobs.failed.is_set():
                    return
            build("first")

        scheduler.add_job(first_build, id="first-build", name="first build once caught up")
    return scheduler


def _record_failure(jobs: ServiceJobs, step: str, started: float) -> None:
    outcome = JobOutcome(False, time.monotonic() - started, time.time())
    if step == "export":
        jobs.last_export = outcome
    else:
        jobs.last_build = outcome
