"""Collector metrics added up across worker processes."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry

from cdp.ingest.collector.metrics import WorkersCollector, report_of


def test_a_metrics_file_caught_while_a_worker_creates_it_is_read_again_not_an_error(tmp_path):
    being_created = tmp_path / "counter_4242.db"
    being_created.write_bytes(b"")  # as a worker's first counter file is, for an instant
    threading.Timer(0.05, being_created.unlink).start()
    registry = CollectorRegistry()
    WorkersCollector(registry, path=str(tmp_path))
    assert report_of(registry).requests == 0
