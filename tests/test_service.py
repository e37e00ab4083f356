"""`cdp run`'s wiring: a part that fails stops the whole service, loudly."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import date

import pytest

from cdp.errors import ServiceError
from cdp.ingest.broker import free_port
from cdp.ingest.generator import generate_store
from cdp.ingest.producer import produce_file
from cdp.ingest.topics import create_topics
from cdp.service import run_service
from cdp.settings import load_settings
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
    monkeypatch.setattr("cdp.processing.jobs.pipeline.build_and_publish", a_bug)
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

    monkeypatch.setattr("cdp.processing.jobs.pipeline.build_and_publish", no_room)
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


def test_cdp_run_with_the_collector_enabled_collects_ingests_and_shares_its_metrics(
    isolated_config, tmp_path
):
    from tests.ingest.collector.conftest import (
        DEFAULT_SOURCES,
        SERVER_KEY,
        collector_section,
        wait_until_healthy,
    )
    from tests.ingest.collector.test_collector_http import post

    web, metrics = free_port(), free_port()
    config = tmp_path / "run.toml"
    config.write_text(
        isolated_config.read_text().replace('listen = ""', f'listen = "127.0.0.1:{metrics}"')
        + collector_section(DEFAULT_SOURCES, enabled=True, listen=f"127.0.0.1:{web}")
    )
    settings = load_settings(config)
    create_topics(settings)
    log = tmp_path / "run.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "cdp", "--config", str(config), "run"],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    try:
        wait_until_healthy(f"http://127.0.0.1:{web}", process, log)
        batch = {
            "batch": [
                {"type": "page", "messageId": f"m-{n}", "anonymousId": "a-1"} for n in range(5)
            ]
        }
        assert post(f"http://127.0.0.1:{web}/v1/batch", batch, key=SERVER_KEY)[0] == 200
        deadline = time.monotonic() + 60
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics") as answer:
                text = answer.read().decode()
            stored = [
                line for line in text.splitlines() if line.startswith("cdp_ingest_stored_total")
            ]
            if stored and float(stored[0].rsplit(" ", 1)[1]) >= 5:
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.2)
        assert 'cdp_collector_requests_total{call="batch",status="200"} 1.0' in text
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text()[-3000:]
    with connect(settings.storage.db_path) as con:
        assert con.execute("SELECT count(*) FROM events").fetchone() == (5,)
