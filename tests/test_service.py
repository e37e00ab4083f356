"""`cdp run`'s wiring: a part that fails stops the whole service, loudly."""

from __future__ import annotations

import threading
import time
from datetime import date

import pytest

from cdp.errors import ServiceError
from cdp.ingest.generator import generate_store
from cdp.ingest.producer import produce_file
from cdp.ingest.topics import create_topics
from cdp.service import run_service
from cdp.storage.database import connect

pytestmark = pytest.mark.kafka


@pytest.fixture
def backlog(kafka_settings, tmp_path) -> None:
    """A small store waiting in the topics: the service's first build follows it."""
    source = tmp_path / "store.jsonl"
    generate_store(source, customers=50, seed=3, end=date(2026, 11, 1))
    create_topics(kafka_settings)
    produce_file(kafka_settings, source)


def test_a_job_failing_unexpectedly_stops_the_service_with_the_reason(
    kafka_settings, backlog, monkeypatch
):
    def a_bug(*args, **kwargs):
        raise ZeroDivisionError("a bug in a build stage")

    # The first build (once the backlog is in) meets a bug, not an environmental
    # failure: carrying on would leave a service that never builds again.
    monkeypatch.setattr("cdp.processing.scheduler.build_and_publish", a_bug)
    stop = threading.Event()
    started = time.monotonic()
    with connect(kafka_settings.storage.db_path) as con, pytest.raises(ServiceError) as raised:
        run_service(kafka_settings, con, stop)
    assert "first build job failed unexpectedly" in str(raised.value)
    assert "ZeroDivisionError: a bug in a build stage" in str(raised.value)
    assert time.monotonic() - started < 60
    assert stop.is_set()


def test_an_environmental_job_failure_is_recorded_and_the_service_goes_on(
    kafka_settings, backlog, monkeypatch
):
    attempts = []

    def no_room(*args, **kwargs):
        attempts.append(time.monotonic())
        raise PermissionError(13, "Permission denied", "cdp.analyst.duckdb")

    monkeypatch.setattr("cdp.processing.scheduler.build_and_publish", no_room)
    stop = threading.Event()
    service = {}

    def run() -> None:
        with connect(kafka_settings.storage.db_path) as con:
            service["stats"] = run_service(kafka_settings, con, stop)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 60
    while not attempts and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(2)  # the watchdog would have stopped it by now
    assert thread.is_alive() and not stop.is_set()
    stop.set()
    thread.join(timeout=60)
    assert attempts and service["stats"].consumed > 0
