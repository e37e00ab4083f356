"""Collect: Segment-format events over HTTP from the SDKs stores already use -> Kafka.

``cdp collect`` (and ``cdp run`` with ``collector.enabled``) serves the Segment HTTP
Tracking API, so pointing analytics.js, analytics-python, rudder-sdk-python or any
Segment-format sender at cdp is the whole integration. Events go to the same family
topics as a back end's own, and are validated and stored by ``cdp ingest`` like every
other event: one validation, one set of dead letters.

Modules, each with one concern:

- ``segment``: the protocol (body, limits, write key, mapping to Kafka messages);
- ``delivery``: Kafka acknowledgement per request, and back-pressure;
- ``app``: HTTP routes, authentication, CORS, answers;
- ``metrics``: Prometheus metrics, added up across workers;
- ``server``: uvicorn on its own thread in one process, start and graceful stop;
- ``workers`` and ``worker``: ``collector.workers`` such processes on one socket.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from cdp.errors import ServiceError
from cdp.ingest.collector.metrics import CollectorReport
from cdp.ingest.collector.workers import CollectorWorkers
from cdp.settings import Settings

__all__ = ["CollectorReport", "CollectorWorkers", "run_collector"]

PROGRESS_EVERY_S = 60.0


def run_collector(
    settings: Settings,
    stop: threading.Event,
    say: Callable[[str], None] = lambda line: None,
) -> CollectorReport:
    """Serve until ``stop`` is set, then finish the requests in progress and return."""
    workers = CollectorWorkers(settings)
    try:
        try:
            workers.start()
            say(_started(settings, workers.address))
            _serve_until(stop, workers, say)
        finally:
            workers.stop()
        return workers.report()  # read before the metrics files go
    finally:
        workers.remove_metrics()


def _serve_until(
    stop: threading.Event, workers: CollectorWorkers, say: Callable[[str], None]
) -> None:
    """Watch the workers until ``stop``; say the totals once a minute while they move."""
    logged, logged_at = workers.report(), time.monotonic()
    while not stop.wait(1.0):
        failure = workers.failure()
        if failure:
            raise ServiceError(f"the collector stopped: {failure}")
        if time.monotonic() - logged_at >= PROGRESS_EVERY_S:
            now = workers.report()
            if now != logged:
                say(_progress(now))
            logged, logged_at = now, time.monotonic()


def _started(settings: Settings, address: str) -> str:
    sources = _count(len(settings.collector.sources), "source")
    processes = _count(settings.collector.workers, "worker")
    return (
        f"cdp collect: http://{address}/v1/batch -> Kafka {settings.kafka.bootstrap_servers} "
        f"({sources}, {processes}); health on /healthz, metrics on /metrics"
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _progress(report: CollectorReport) -> str:
    return (
        f"collected {report.events:,} events in {report.requests:,} requests so far "
        f"({report.unavailable:,} answered 503, {report.refused:,} refused)"
    )
