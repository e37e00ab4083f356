"""The collector's Prometheus metrics, and the totals read back from them.

Workers are separate processes (``cdp.ingest.collector.workers``): each writes its
metrics to files in the run's directory, and whoever reads them (a worker's
``/metrics``, ``cdp run``'s shared one, the report ``cdp collect`` prints when it
stops) adds them up with prometheus-client's ``MultiProcessCollector``. Gauges say
how to combine workers: in-flight events add up, "connected" is the least of them.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector


@dataclass(frozen=True)
class CollectorReport:
    requests: int
    events: int
    unavailable: int  # answered 503: SDKs retry them
    refused: int  # answered 4xx: SDKs drop them


class CollectorMetrics:
    """The collector's metrics, created in ``registry``. In a worker process they are
    also written to the run's metrics directory (prometheus-client's multiprocess
    mode), where :func:`report_of` and ``/metrics`` add up every worker's."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "cdp_collector_requests",
            "HTTP requests answered by the collector, by call and status code.",
            ["call", "status"],
            registry=registry,
        )
        self.events = Counter(
            "cdp_collector_events",
            "Events acknowledged by Kafka and answered 200, by source.",
            ["source"],
            registry=registry,
        )
        self.produce_latency = Histogram(
            "cdp_collector_kafka_produce_seconds",
            "From handing a request's events to the producer to Kafka's acknowledgement.",
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.in_flight = Gauge(
            "cdp_collector_in_flight_events",
            "Events accepted from clients and not yet acknowledged by Kafka.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.kafka_connected = Gauge(
            "cdp_collector_kafka_connected",
            "1 once every collector worker's producer has connected to Kafka.",
            registry=registry,
            multiprocess_mode="livemin",
        )

    def count(self, call: str, status: int) -> None:
        self.requests.labels(call, str(status)).inc()


def report_of(registry: CollectorRegistry) -> CollectorReport:
    """The totals in ``registry``'s collector metrics."""
    requests = events = unavailable = refused = 0
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name == "cdp_collector_requests_total":
                status = int(sample.labels["status"])
                requests += int(sample.value)
                unavailable += int(sample.value) if status == 503 else 0
                refused += int(sample.value) if 400 <= status < 500 else 0
            elif sample.name == "cdp_collector_events_total":
                events += int(sample.value)
    return CollectorReport(requests, events, unavailable, refused)


class WorkersCollector(MultiProcessCollector):
    """Every worker's metrics, added up, from the run's metrics directory.

    A worker creates a file the first time it uses a kind of metric (a counter's
    first label, say, at its first request), and prometheus-client reads a file that
    is being created as empty and fails (``struct.error``); such a read is retried."""

    def collect(self) -> Iterable[Metric]:
        for attempt in range(20):
            try:
                return list(super().collect())
            except (struct.error, ValueError):
                if attempt == 19:
                    raise
                time.sleep(0.01)
        return []
