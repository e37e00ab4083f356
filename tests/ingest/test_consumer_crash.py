"""`cdp ingest` as a real process: kill -9 at random moments, SIGTERM, exact counts."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest

from cdp.ingest.generator import generate_store
from cdp.ingest.loader import load_file
from cdp.ingest.producer import produce_file
from cdp.ingest.topics import create_topics
from cdp.ingest.validation import ValidationLimits
from cdp.storage.database import connect
from tests.helpers import offsets_accounted, stored_next_offsets

pytestmark = pytest.mark.kafka


def _start_ingest(config: Path, log: Path, *extra: str) -> subprocess.Popen:
    # Small batches: many transactions, so a kill can land between or inside any of them.
    env = {**os.environ, "CDP_INGEST__MAX_BATCH_RECORDS": "300"}
    return subprocess.Popen(
        [sys.executable, "-m", "cdp", "--config", str(config), "-v", "ingest", *extra],
        stdout=subprocess.PIPE,
        stderr=log.open("wb"),
        env=env,
    )


def _logged(log: Path, logger: str, message_start: str) -> bool:
    """Whether the process logged it (logs are JSON lines when stderr is a file)."""
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry["logger"] == logger and entry["message"].startswith(message_start):
                return True
    return False


def _wait_for_log(
    log: Path, process: subprocess.Popen, logger: str, message_start: str, timeout_s: float = 60
) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _logged(log, logger, message_start):
            return True
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        time.sleep(0.05)
    return False


def _consumed_so_far(log: Path) -> int:
    """The most this run has logged as stored ("stored a batch: N consumed so far")."""
    consumed = 0
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError, KeyError):
            message = json.loads(line)["message"]
            if message.startswith("stored a batch: "):
                consumed = max(consumed, int(message.split()[3]))
    return consumed


def _wait_until_consumed(log: Path, process: subprocess.Popen, at_least: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        if _consumed_so_far(log) >= at_least:
            return
        time.sleep(0.01)


def _wait_for_assignment(log: Path, process: subprocess.Popen) -> None:
    assigned = _wait_for_log(log, process, "cdp.ingest.consumer", "partitions assigned: t")
    assert assigned, "ingest was never assigned partitions"


@pytest.fixture
def produced_store(kafka_settings, tmp_path):
    source = tmp_path / "store.jsonl"
    report = generate_store(source, customers=3000, seed=7, end=date(2026, 11, 1))
    create_topics(kafka_settings)
    sent = produce_file(kafka_settings, source).sent
    assert sent == report.events + report.resent
    return source, report, sent


@pytest.mark.slow
def test_kill_9_at_random_moments_then_restart_loses_and_duplicates_nothing(
    isolated_config, kafka_settings, produced_store, tmp_path
):
    source, report, sent = produced_store
    chaos = random.Random()
    stored_after_each_kill = []
    for attempt in range(5):
        log = tmp_path / f"ingest-{attempt}.log"
        process = _start_ingest(isolated_config, log)
        _wait_for_assignment(log, process)
        # Kill once this run has stored a random share (at most a quarter) of what is
        # left, then a few random milliseconds later so the kill can land inside a
        # transaction: paced by progress, not by the clock, so every kill lands
        # mid-stream however fast the machine or the writer's merged transactions.
        left = sent - (stored_after_each_kill[-1] if stored_after_each_kill else 0)
        _wait_until_consumed(log, process, chaos.randint(1, max(1, left // 4)))
        time.sleep(chaos.uniform(0.0, 0.05))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        with connect(kafka_settings.storage.db_path) as con:
            stored_after_each_kill.append(sum(stored_next_offsets(con).values()))
    # The kills must have landed mid-stream, not before the first or after the last batch.
    mid_stream = [n for n in stored_after_each_kill if 0 < n < sent]
    assert len(set(mid_stream)) >= 2, stored_after_each_kill

    final = _start_ingest(isolated_config, tmp_path / "final.log", "--until-idle")
    final.communicate(timeout=240)
    assert final.returncode == 0, (tmp_path / "final.log").read_text()[-3000:]

    with connect(kafka_settings.storage.db_path) as con:
        events, dead, copies = con.execute(
            "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM dead_letters),"
            " (SELECT count(*) FROM duplicate_events)"
        ).fetchone()
        accounted = offsets_accounted(con)
        next_offsets = stored_next_offsets(con)
        ingested_ids = {row[0] for row in con.execute("SELECT event_id FROM events").fetchall()}

    # Every produced message is in exactly one table, once.
    assert events + dead + copies == sent
    assert dead == report.malformed
    assert copies == report.resent
    for topic, partition, rows, distinct in accounted:
        assert rows == distinct == next_offsets[(topic, partition)], (topic, partition)

    # The same file loaded without Kafka yields exactly the same events.
    with connect(tmp_path / "reference.duckdb") as reference:
        load_file(reference, source, limits=ValidationLimits.from_settings(kafka_settings.ingest))
        expected_ids = {
            row[0] for row in reference.execute("SELECT event_id FROM events").fetchall()
        }
    assert ingested_ids == expected_ids


def test_sigterm_finishes_the_batch_stores_it_and_exits_zero(
    isolated_config, kafka_settings, produced_store, tmp_path
):
    _, _, sent = produced_store
    log = tmp_path / "ingest.log"
    process = _start_ingest(isolated_config, log)
    _wait_for_assignment(log, process)
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 0, log.read_text()[-3000:]
    assert b"consumed" in out

    with connect(kafka_settings.storage.db_path) as con:
        accounted = offsets_accounted(con)
        next_offsets = stored_next_offsets(con)
    # What was stored is exactly what the stored offsets say was consumed.
    assert sum(rows for _, _, rows, _ in accounted) == sum(next_offsets.values())
    for topic, partition, rows, distinct in accounted:
        assert rows == distinct == next_offsets[(topic, partition)]
    assert sum(next_offsets.values()) <= sent
