"""``cdp run``: ingest, the scheduled builds and the health endpoint, in one process
that fails loudly or not at all.

One process is the database's only writer (DuckDB allows no other), so ingest and
the scheduled builds share it: the consumer runs on the main thread, APScheduler's
jobs on a background thread (``cdp.processing.jobs.scheduler``), each through its own
cursor; ``/healthz`` and ``/metrics`` are served on a third (``cdp.monitoring``).
With ``collector.enabled``, the HTTP collector's worker processes
(``cdp.ingest.collector``) serve SDKs, their metrics on the same ``/metrics``.

A service that is half-alive is worse than one that is down: a supervisor (systemd,
Docker, Kubernetes) restarts a process that exits, not one that idles. So if any
part dies — the consumer, its validator process, the scheduler, a job with an
unexpected error, the monitoring server — the others are stopped, a running build is
cancelled (it commits nothing: builds write in one transaction at their end), and
``run_service`` raises :class:`~cdp.errors.ServiceError` naming the part and why,
within seconds. On SIGTERM, by contrast, a running build is allowed to finish.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator

import duckdb

from cdp.errors import ServiceError
from cdp.ingest.collector import CollectorWorkers
from cdp.ingest.consumer import EventConsumer, IngestStats
from cdp.monitoring import MonitoringServer
from cdp.processing.activation.export import clean_up_interrupted_exports
from cdp.processing.jobs.pipeline import clean_up_interrupted_builds
from cdp.processing.jobs.scheduler import ServiceJobs, make_scheduler
from cdp.processing.segmentation.config import load_segment_config
from cdp.settings import Settings

log = logging.getLogger(__name__)

# How often the watchdog looks at the scheduler and the monitoring thread, and how
# long the scheduler may go without running its heartbeat job (it runs every 5 s;
# a busy machine may delay it, a dead scheduler thread stops it).
WATCH_EVERY_S = 1.0
SCHEDULER_SILENT_S = 60.0


def run_service(
    settings: Settings,
    con: duckdb.DuckDBPyConnection,
    stop: threading.Event,
    say: Callable[[str], None] = lambda line: None,
) -> IngestStats:
    """Ingest until ``stop`` is set, with the build jobs running alongside."""
    segments = load_segment_config(settings)
    # Whatever a killed predecessor left (builds and exports marked running, staging
    # copies holding personal data) is dealt with now, not at the first nightly job.
    clean_up_interrupted_builds(con, settings)
    clean_up_interrupted_exports(con, settings, segments)
    jobs = ServiceJobs()
    monitoring: MonitoringServer | None = None
    collector: CollectorWorkers | None = None
    consumer = EventConsumer(settings, con, stop=stop)
    try:
        if settings.service.listen:
            monitoring = MonitoringServer(settings, consumer, jobs)
            consumer.on_batch = monitoring.observe_batch
        if settings.collector.enabled:
            collector = CollectorWorkers(settings)
            if monitoring is not None:
                collector.metrics_collector(monitoring.registry)
            collector.start()
            say(f"collecting events over HTTP on http://{collector.address}/v1/batch")
    except BaseException:
        consumer.close()
        if monitoring is not None:
            monitoring.stop()
        if collector is not None:
            collector.stop()
            collector.remove_metrics()
        raise
    scheduler = make_scheduler(
        settings,
        con,
        segments,
        consumer.caught_up,
        stop,
        jobs,
        broker_reachable=lambda: consumer.broker.reachable,
    )
    scheduler.start()
    if monitoring is not None:
        monitoring.start()
        say(f"health on http://{monitoring.address}/healthz, metrics on /metrics")
    watchdog = threading.Thread(
        target=_watch, args=(monitoring, collector, jobs, stop), name="cdp-watchdog", daemon=True
    )
    watchdog.start()
    try:
        stats = consumer.run()
    except BaseException as exc:
        jobs.fail(f"ingest stopped: {exc}")
        raise
    finally:
        stop.set()
        if collector is not None:  # its last requests' events reach Kafka
            collector.stop()
            collector.remove_metrics()
        with _cancelling_jobs(jobs):  # a failing service does not wait for a long build
            scheduler.shutdown(wait=True)
        if monitoring is not None:
            monitoring.stop()
    if jobs.fatal:
        raise ServiceError(f"cdp run stopped: {jobs.fatal}")
    return stats


def _watch(
    monitoring: MonitoringServer | None,
    collector: CollectorWorkers | None,
    jobs: ServiceJobs,
    stop: threading.Event,
) -> None:
    """Stop the service when a background part is gone or a job failed unexpectedly."""
    while not stop.wait(WATCH_EVERY_S):
        silent = time.monotonic() - jobs.scheduler_beat
        if silent > SCHEDULER_SILENT_S:
            jobs.fail(f"the scheduler has run no job for {silent:.0f} s (its thread died)")
        elif monitoring is not None and not monitoring.thread.is_alive():
            jobs.fail("the health and metrics server stopped")
        elif collector is not None and (failure := collector.failure()):
            jobs.fail(f"the HTTP collector stopped: {failure}")
        if jobs.failed.is_set():
            log.error("%s; stopping the service", jobs.fatal)
            stop.set()
            return


@contextlib.contextmanager
def _cancelling_jobs(jobs: ServiceJobs) -> Iterator[None]:
    """While the body waits for the jobs to end: if the service is failing, cancel
    the running job's queries, again and again (DuckDB forgets an interrupt that
    arrives between two queries) until the body is done."""
    done = threading.Event()

    def cancel() -> None:
        while not done.is_set():
            if jobs.failed.is_set():
                jobs.interrupt()
            done.wait(0.2)

    canceller = threading.Thread(target=cancel, name="cdp-cancel-jobs", daemon=True)
    canceller.start()
    try:
        yield
    finally:
        done.set()
        canceller.join()
