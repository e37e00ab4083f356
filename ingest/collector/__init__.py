"""Collect: Segment-format events over HTTP from the SDKs stores already use -> Kafka.

``cdp collect`` (and ``cdp run`` with ``collector.enabled``) serves the Segment HTTP
Tracking API, so pointing analytics.js, analytics-python, rudder-sdk-python or any
Segment-format sender at cdp is the whole integration. Events go to the same family
topics as a back end's own, and are validated and stored by ``cdp ingest`` like every
other event: one validation, one set of dead letters.

Modules, each with one concern:

- ``segment``: the protocol (body, limits, write key, mapping to Kafka messages);
- ``delivery``: Kafka acknowledgement per request, and back-pressure;
- ``app``: HTTP routes, authentication, CORS, answers and metrics;
- ``server``: uvicorn on its own thread, start and graceful stop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from cdp.errors import ServiceError
from cdp.ingest.collector.app import CollectorReport
from cdp.ingest.collector.server import CollectorServer
from cdp.settings import Settings

__all__ = ["CollectorReport", "CollectorServer", "run_collector"]

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 60.0


def run_collector(
    settings: Settings,
    stop: threading.Event,
    say: Callable[[str], None] = lambda line: None,
) -> CollectorReport:
    """Serve until ``stop`` is set, then finish the requests in progress and return."""
    server = CollectorServer(settings)
    server.start()
    say(
        f"cdp collect: http://{server.address}/v1/batch -> Kafka "
        f"{settings.kafka.bootstrap_servers} ({len(settings.collector.sources)} sources); "
        "health on /healthz, metrics on /metrics"
    )
    logged, logged_at = server.metrics.report(), time.monotonic()
    try:
        while not stop.wait(1.0):
            if not server.alive:
                raise ServiceError(f"the collector stopped: {server.error or 'unknown reason'}")
            now = server.metrics.report()
            if now != logged and time.monotonic() - logged_at >= PROGRESS_EVERY_S:
                log.info(
                    "collected %d events in %d requests so far (%d answered 503, %d refused)",
                    now.events, now.requests, now.unavailable, now.refused,
                )  # fmt: skip
                logged, logged_at = now, time.monotonic()
    finally:
        server.stop()
    return server.metrics.report()
