"""What an operator's tools read from ``cdp run``: ``GET /healthz`` and ``GET /metrics``.

``/metrics`` is the Prometheus text format (``prometheus-client``). Counters and
gauges are read from the consumer's and the jobs' own state when Prometheus scrapes,
so the ingest hot path pays nothing for them; only the batch latency histogram is
observed per batch.

``/healthz`` tells "live and ingesting" from "stuck", for a supervisor's liveness
probe: 200 while the consumer works, also while it waits out a broker outage (a
restart would not bring the broker back); 503 once the consumer's poll loop has not
turned for ``service.stuck_after_s``, or records wait and no batch was stored for
that long, or a part of the service failed. The body is a small JSON object saying
which (``status``, ``detail``).

Served by the standard library's WSGI server on its own thread (a handful of
requests a minute from a scraper do not need more), on ``service.listen``.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from cdp.errors import ConfigError
from cdp.ingest.consumer import EventConsumer, IngestStats
from cdp.processing.jobs.scheduler import JobOutcome, ServiceJobs
from cdp.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Health:
    healthy: bool
    status: str  # ok | starting | broker unreachable | stuck | failed
    detail: str

    def as_json(self) -> bytes:
        return json.dumps({"status": self.status, "detail": self.detail}).encode()


def assess_health(
    consumer: EventConsumer, jobs: ServiceJobs, stuck_after_s: float, now: float | None = None
) -> Health:
    """Unhealthy (503) only for what a restart may cure: a part failed, or the
    consumer is wedged. A broker outage is not one of them (a restarted cdp would
    wait for the broker all the same), so it is reported, with 200."""
    now = time.monotonic() if now is None else now
    if jobs.fatal:
        return Health(False, "failed", jobs.fatal)
    stats = consumer.stats
    since_turn = now - consumer.loop_turned_at
    if since_turn >= stuck_after_s:
        detail = f"the consumer's poll loop has not turned for {since_turn:.0f} s"
        return Health(False, "stuck", detail)
    broker = consumer.broker
    if not broker.reachable and broker.unreachable_since is not None:
        down = now - broker.unreachable_since
        detail = f"Kafka broker unreachable for {down:.0f} s ({broker.last_reason})"
        return Health(True, "broker unreachable", detail)
    waiting = sum(broker.lag.values())
    since_progress = now - (stats.last_stored_at or stats.started_at)
    if (waiting or consumer.batches_in_flight) and since_progress >= stuck_after_s:
        return Health(
            False,
            "stuck",
            f"records are waiting ({waiting:,} in Kafka, {consumer.batches_in_flight} batches "
            f"polled) and none was stored for {since_progress:.0f} s",
        )
    if not consumer.caught_up.is_set():
        return Health(True, "starting", f"reading the backlog: {stats.consumed:,} consumed so far")
    return Health(True, "ok", f"{stats.consumed:,} consumed, {waiting:,} records waiting")


class _ServiceCollector:
    """Reads the consumer's and the jobs' state at scrape time."""

    def __init__(self, consumer: EventConsumer, jobs: ServiceJobs) -> None:
        self._consumer = consumer
        self._jobs = jobs

    def collect(self) -> Iterator[Metric]:
        stats: IngestStats = self._consumer.stats
        for name, value, help_text in (
            ("cdp_ingest_consumed", stats.consumed, "Messages consumed from Kafka."),
            ("cdp_ingest_stored", stats.stored, "Events stored in the events table."),
            ("cdp_ingest_duplicates", stats.duplicates, "Re-sent copies of stored events."),
            ("cdp_ingest_batches", stats.batches, "Batches stored, each one transaction."),
        ):
            yield CounterMetricFamily(name, help_text, value=value)
        dead = CounterMetricFamily(
            "cdp_ingest_dead_lettered", "Messages dead-lettered, by kind.", labels=["kind"]
        )
        for kind, count in sorted(dict(stats.dead_letter_kinds).items()):
            dead.add_metric([kind], count)
        yield dead
        lag = GaugeMetricFamily(
            "cdp_ingest_lag",
            "Records the broker holds that are not stored yet, per partition.",
            labels=["topic", "partition"],
        )
        for (topic, partition), waiting in sorted(dict(self._consumer.broker.lag).items()):
            lag.add_metric([topic, str(partition)], waiting)
        yield lag
        yield GaugeMetricFamily(
            "cdp_broker_reachable",
            "1 while the Kafka broker answers, 0 during an outage.",
            value=1 if self._consumer.broker.reachable else 0,
        )
        yield GaugeMetricFamily(
            "cdp_ingest_caught_up",
            "1 once the backlog present at start was stored.",
            value=1 if self._consumer.caught_up.is_set() else 0,
        )
        for job, outcome in (("build", self._jobs.last_build), ("export", self._jobs.last_export)):
            yield from _outcome_metrics(job, outcome)


def _outcome_metrics(job: str, outcome: JobOutcome | None) -> Iterable[Metric]:
    if outcome is None:
        return
    yield GaugeMetricFamily(
        f"cdp_last_{job}_success",
        f"1 if the last {job} succeeded, else 0.",
        value=1 if outcome.succeeded else 0,
    )
    yield GaugeMetricFamily(
        f"cdp_last_{job}_duration_seconds",
        f"How long the last {job} took.",
        value=outcome.seconds,
    )
    yield GaugeMetricFamily(
        f"cdp_last_{job}_finished_timestamp_seconds",
        f"When the last {job} ended (Unix time).",
        value=outcome.finished_at,
    )


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # scrapes are not news
        log.debug("monitoring: " + format, *args)


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _ThreadingWSGIServerIPv6(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


class MonitoringServer:
    """``/healthz`` and ``/metrics`` on a background thread."""

    def __init__(self, settings: Settings, consumer: EventConsumer, jobs: ServiceJobs) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_ServiceCollector(consumer, jobs))
        self.batch_latency = Histogram(
            "cdp_ingest_batch_latency_seconds",
            "From poll to commit of a stored batch.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        metrics_app = make_wsgi_app(self.registry)
        stuck_after = settings.service.stuck_after_s

        def app(environ: dict, start_response: Callable) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path == "/metrics":
                return metrics_app(environ, start_response)
            if path == "/healthz":
                health = assess_health(consumer, jobs, stuck_after)
                code = "200 OK" if health.healthy else "503 Service Unavailable"
                start_response(code, [("Content-Type", "application/json")])
                return [health.as_json()]
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found: try /healthz or /metrics\n"]

        host, _, port = settings.service.listen.rpartition(":")
        host = host.strip("[]")
        server_class = _ThreadingWSGIServerIPv6 if ":" in host else _ThreadingWSGIServer
        try:
            self._server = make_server(
                host, int(port), app, server_class=server_class, handler_class=_QuietHandler
            )
        except OSError as exc:
            raise ConfigError(
                f"service.listen: cannot serve /healthz and /metrics on "
                f"{settings.service.listen}: {exc.strerror or exc} (choose another port, or "
                'set it to "" to turn the endpoint off)'
            ) from None
        self.address = f"{host}:{self._server.server_port}"
        self.thread = threading.Thread(
            target=self._server.serve_forever, name="cdp-monitoring", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def observe_batch(self, stats: IngestStats) -> None:
        if stats.last_batch_latency_s is not None:
            self.batch_latency.observe(stats.last_batch_latency_s)

    def stop(self) -> None:
        if self.thread.is_alive():  # shutdown() waits for a serve loop that never ran
            self._server.shutdown()
        self._server.server_close()
