"""`cdp ingest` and `cdp run` as real processes against a broker that goes away.

Each test runs its own bundled broker, so that pausing it (SIGSTOP: connections hang,
as in a network partition) or replacing it affects no other test.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from cdp.ingest.broker import LocalBroker, free_port, start_local_broker, wait_for_port
from cdp.ingest.generator import generate_store
from cdp.ingest.producer import produce_file
from cdp.ingest.topics import create_topics
from cdp.settings import Settings, load_settings
from cdp.storage.database import connect
from tests.helpers import offsets_accounted, stored_next_offsets, validator_process_of

pytestmark = pytest.mark.kafka

# Longer than kafka-python's 30 s request timeout: requests sent before or during the
# pause fail rather than being answered late (the failure observed in the field).
LONG_PAUSE_S = 35


def _config(tmp_path: Path, bootstrap: str, name: str, **sections: dict) -> Path:
    """A config file for one process: its own database and group, shared topics."""
    settings: dict[str, dict] = {
        "kafka": {"bootstrap_servers": bootstrap, "group_id": name},
        "topics": {
            "purchase": "o.purchases",
            "browse": "o.browse",
            "cart": "o.cart",
            "identify": "o.identify",
        },
        "storage": {"db_path": str(tmp_path / f"{name}.duckdb")},
        "ingest": {"idle_timeout_s": 1.5},
        "service": {"listen": ""},
    }
    for section, values in sections.items():
        settings.setdefault(section, {}).update(values)
    lines = []
    for section, values in settings.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in values.items())
    path = tmp_path / f"{name}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _start(config: Path, log: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "CDP_INGEST__MAX_BATCH_RECORDS": "300"}
    return subprocess.Popen(
        [sys.executable, "-m", "cdp", "--config", str(config), *args],
        stdout=subprocess.PIPE,
        stderr=log.open("wb"),
        env=env,
    )


def _produce(settings: Settings, tmp_path: Path, customers: int, seed: int) -> int:
    source = tmp_path / f"store-{seed}.jsonl"
    generate_store(source, customers=customers, seed=seed, end=date(2026, 11, 1))
    create_topics(settings)
    return produce_file(settings, source).sent


def _messages(log: Path, start: str) -> list[str]:
    """cdp's own log messages (JSON lines) that start so."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry["logger"].startswith("cdp") and entry["message"].startswith(start):
                found.append(entry["message"])
    return found


def _first_build_done(log: Path) -> bool:
    """The first build finished ("first build once caught up", the job's name, is
    logged when the job is added: it says nothing)."""
    return re.search(r"first build \d+ succeeded", log.read_text(errors="replace")) is not None


def _consumed_so_far(log: Path) -> int:
    """What the last stored batch's log line says was consumed so far (-v)."""
    last = _messages(log, "stored a batch")[-1]
    return int(re.search(r"(\d+) consumed so far", last).group(1))


def _printed(log: Path) -> str:
    """What reached the user's terminal: stderr lines that are not log records."""
    lines = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            json.loads(line)
        except ValueError:
            lines.append(line)
    return "\n".join(lines)


def _wait(condition, process: subprocess.Popen, log: Path, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert process.poll() is None, log.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
        time.sleep(0.1)


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _metric(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + " ") or line.startswith(name + "{")
    )


def _assert_each_offset_once(db: Path, sent: int) -> None:
    with connect(db) as con:
        accounted = offsets_accounted(con)
        next_offsets = stored_next_offsets(con)
    assert sum(rows for _, _, rows, _ in accounted) == sent
    for topic, partition, rows, distinct in accounted:
        assert rows == distinct == next_offsets[(topic, partition)], (topic, partition)


def _settled_commits(bootstrap: str, group: str, settings: Settings) -> dict:
    """The group's offsets as committed in Kafka, once they stop changing."""
    reader = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    try:
        previous: dict = {}
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            current = {
                (topic, partition): reader.committed(TopicPartition(topic, partition))
                for topic in settings.topics.by_family().values()
                for partition in range(settings.topics.partitions)
            }
            if current == previous:
                return current
            previous = current
            time.sleep(3)
        return previous
    finally:
        reader.close(autocommit=False)


def _pause(broker: LocalBroker, seconds: float) -> None:
    os.kill(broker.process.pid, signal.SIGSTOP)
    time.sleep(seconds)
    os.kill(broker.process.pid, signal.SIGCONT)


@pytest.mark.slow
def test_broker_outage_mid_backlog_and_when_idle_ingest_and_run_stay_up_and_count_exactly(
    own_broker, tmp_path
):
    bootstrap = own_broker.bootstrap_servers
    metrics_port = free_port()
    ingest_config = _config(tmp_path, bootstrap, "ingest")
    run_config = _config(
        tmp_path, bootstrap, "run", service={"listen": f"127.0.0.1:{metrics_port}"}
    )
    settings = load_settings(ingest_config)
    sent = _produce(settings, tmp_path, customers=1500, seed=3)
    ingest_log, run_log = tmp_path / "ingest.log", tmp_path / "run.log"
    ingest = _start(ingest_config, ingest_log, "-v", "ingest", "--until-idle")
    run = _start(run_config, run_log, "-v", "run")
    metrics = f"http://127.0.0.1:{metrics_port}"
    try:
        # Mid-backlog for `cdp ingest --until-idle`: some batches stored, not all.
        # (Read before pausing: the consumer goes on storing the records it fetched
        # before the pause, which with merged writes can be all of them within 0.5 s.)
        _wait(lambda: _messages(ingest_log, "stored a batch"), ingest, ingest_log)
        stored_before = _consumed_so_far(ingest_log)
        paused = threading.Thread(target=_pause, args=(own_broker, LONG_PAUSE_S))
        paused.start()
        assert 0 < stored_before < sent, "the pause did not land mid-backlog"
        time.sleep(LONG_PAUSE_S / 2)
        # The service says it is waiting for the broker, and is still healthy.
        status, body = _get(f"{metrics}/healthz")
        assert (status, json.loads(body)["status"]) == (200, "broker unreachable"), body
        paused.join()
        out, _ = ingest.communicate(timeout=180)
        assert ingest.returncode == 0, ingest_log.read_text()[-3000:]
        assert f"consumed {sent:,}".encode() in out
        _assert_each_offset_once(tmp_path / "ingest.duckdb", sent)
        assert "Traceback" not in _printed(ingest_log)
        # Said once when it went, once when it came back: no flood.
        assert len(_messages(ingest_log, "Kafka broker")) == 2, _messages(ingest_log, "Kafka")
        assert "unreachable" in _messages(ingest_log, "Kafka broker")[0]

        # `cdp run`, caught up and idle, through a second outage; then more events.
        _wait(lambda: _first_build_done(run_log), run, run_log, 120)
        _pause(own_broker, LONG_PAUSE_S)
        more = _produce(settings, tmp_path, customers=300, seed=4)
        consumed = lambda: _metric(_get(f"{metrics}/metrics")[1], "cdp_ingest_consumed_total")  # noqa: E731
        _wait(lambda: consumed() >= sent + more, run, run_log, 120)

        # Idle checks follow: the lag is known (one series per partition, all 0).
        def lag_series() -> list[str]:
            scraped = _get(f"{metrics}/metrics")[1]
            return re.findall(r"^cdp_ingest_lag\{.*\} (\S+)$", scraped, re.M)

        _wait(lambda: len(lag_series()) == 16, run, run_log, 30)
        # The lag is measured at the consumer's checks (every few seconds while busy,
        # every second once idle): the one scraped may predate the last batches.
        _wait(lambda: {float(value) for value in lag_series()} == {0.0}, run, run_log, 15)
        status, body = _get(f"{metrics}/healthz")
        assert (status, json.loads(body)["status"]) == (200, "ok"), body
        scraped = _get(f"{metrics}/metrics")[1]
        assert _metric(scraped, "cdp_broker_reachable") == 1
        assert _metric(scraped, "cdp_ingest_dead_lettered_total") > 0
        assert _metric(scraped, "cdp_last_build_success") == 1
        assert _metric(scraped, "cdp_ingest_batch_latency_seconds_count") > 0
        # Kafka's courtesy copy of the offsets catches up too (lag tools read it).
        committed = _settled_commits(bootstrap, "run", settings)
    finally:
        for process in (ingest, run):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        run.communicate(timeout=60)
    assert run.returncode == 0, run_log.read_text()[-3000:]
    assert "Traceback" not in _printed(run_log)
    _assert_each_offset_once(tmp_path / "run.duckdb", sent + more)
    with connect(tmp_path / "run.duckdb") as con:
        stored = stored_next_offsets(con)
    assert committed == stored


@pytest.fixture
def local_s3(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A local S3 (moto) with a bucket for the broker: what a broker needs to keep its
    topics across a restart. Yields the environment the broker reads it from."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "moto.log").open("wb"),
    )
    try:
        wait_for_port("127.0.0.1", port)
        bucket = urllib.request.Request(f"http://127.0.0.1:{port}/tansu", method="PUT")
        urllib.request.urlopen(bucket, timeout=10).close()
        yield {
            "AWS_ENDPOINT": f"http://127.0.0.1:{port}",
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.mark.slow
def test_cdp_run_rides_out_a_broker_restart_and_resumes_exactly(local_s3, tmp_path):
    port = free_port()
    persisted = {"storage_engine": "s3://tansu/", "env": local_s3}
    broker = start_local_broker(port=port, **persisted)
    config = _config(tmp_path, broker.bootstrap_servers, "restart")
    settings = load_settings(config)
    log = tmp_path / "run.log"
    run = None
    try:
        sent = _produce(settings, tmp_path, customers=300, seed=9)
        run = _start(config, log, "-v", "run")
        _wait(lambda: _first_build_done(log), run, log, 120)
        broker.stop()  # a restart: down for a while, then back with its data
        time.sleep(12)
        broker = start_local_broker(port=port, **persisted)
        more = _produce(settings, tmp_path, customers=100, seed=10)
        _wait(lambda: _messages(log, "Kafka broker reachable again"), run, log, 120)
        time.sleep(8)  # the new events are read
    finally:
        if run is not None and run.poll() is None:
            run.send_signal(signal.SIGTERM)
            out, _ = run.communicate(timeout=60)
        broker.stop()
    assert run.returncode == 0, log.read_text()[-3000:]
    assert f"consumed {sent + more:,}".encode() in out
    assert "Traceback" not in _printed(log)
    assert len(_messages(log, "Kafka broker")) == 2, _messages(log, "Kafka broker")
    _assert_each_offset_once(tmp_path / "restart.duckdb", sent + more)


@pytest.mark.slow
def test_until_idle_gives_up_after_the_configured_outage_with_an_error_not_a_traceback(
    own_broker, tmp_path
):
    config = _config(
        tmp_path,
        own_broker.bootstrap_servers,
        "gives-up",
        ingest={"broker_unreachable_timeout_s": 8},
    )
    sent = _produce(load_settings(config), tmp_path, customers=100, seed=5)
    log = tmp_path / "ingest.log"
    process = _start(config, log, "-v", "ingest", "--until-idle")
    _wait(lambda: _messages(log, "partitions assigned"), process, log)
    os.kill(own_broker.process.pid, signal.SIGSTOP)
    started = time.monotonic()
    _, _ = process.communicate(timeout=90)
    waited = time.monotonic() - started
    printed = _printed(log)
    assert process.returncode == 1, log.read_text()[-3000:]
    assert "Traceback" not in printed
    assert "error: the Kafka broker at" in printed
    assert "broker_unreachable_timeout_s = 8 s" in printed
    assert 8 <= waited < 30  # the limit, plus a probe timeout and a bounded close
    with connect(tmp_path / "gives-up.duckdb") as con:
        accounted = offsets_accounted(con)
    assert sum(rows for _, _, rows, _ in accounted) <= sent


@pytest.mark.slow
def test_a_port_that_does_not_speak_kafka_gets_an_error_not_a_traceback(tmp_path):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts connections (the kernel does), never answers
    port = silent.getsockname()[1]
    config = _config(
        tmp_path, f"127.0.0.1:{port}", "silent", ingest={"broker_unreachable_timeout_s": 5}
    )
    source = tmp_path / "one.jsonl"
    source.write_text('{"event_id": "e-1"}\n')
    outcomes = {}
    started: dict[str, tuple[subprocess.Popen, Path]] = {}
    try:
        # Side by side: each waits out its own timeout (~15 s).
        started = {
            name: (_start(config, tmp_path / f"{name}.log", *args), tmp_path / f"{name}.log")
            for name, args in (
                ("ingest", ("ingest", "--until-idle")),
                ("topics", ("topics", "create")),
                ("produce", ("produce", str(source))),
            )
        }
        for name, (process, log) in started.items():
            process.communicate(timeout=90)
            outcomes[name] = (process.returncode, _printed(log))
    finally:
        silent.close()
        for process, _ in started.values():  # none left behind if one timed out
            if process.poll() is None:
                process.kill()
                process.wait()
    for name, (returncode, printed) in outcomes.items():
        assert returncode == 1, (name, printed)
        assert "Traceback" not in printed, (name, printed)
        assert f"the Kafka broker at 127.0.0.1:{port}" in printed, (name, printed)
    assert "has not answered" in outcomes["ingest"][1]
    assert outcomes["topics"][1].startswith("error: creating the topics:")
    assert outcomes["produce"][1].startswith("error: connecting the producer:")


def test_cdp_run_exits_non_zero_within_seconds_when_its_validator_process_dies(
    own_broker, tmp_path
):
    config = _config(tmp_path, own_broker.bootstrap_servers, "dies")
    _produce(load_settings(config), tmp_path, customers=100, seed=6)
    log = tmp_path / "run.log"
    run = _start(config, log, "-v", "run")
    try:
        # Caught up and idle: nothing would ever submit another batch to the validator.
        _wait(lambda: "first build" in log.read_text(errors="replace"), run, log, 120)
        os.kill(_validator(run), signal.SIGKILL)
        started = time.monotonic()
        run.communicate(timeout=60)
        assert time.monotonic() - started < 20
    finally:
        if run.poll() is None:
            run.kill()
    printed = _printed(log)
    assert run.returncode not in (0, None), log.read_text()[-3000:]
    assert "error:" in printed and "validator process died" in printed
    assert "Traceback" not in printed


@pytest.mark.slow
def test_offsets_past_the_log_end_stop_ingest_until_reset_then_nothing_is_skipped(tmp_path):
    port = free_port()
    first = start_local_broker(port=port)
    config = _config(tmp_path, first.bootstrap_servers, "lost")
    settings = load_settings(config)
    try:
        _produce(settings, tmp_path, customers=200, seed=7)
        ingest = subprocess.run(
            [sys.executable, "-m", "cdp", "--config", str(config), "ingest", "--until-idle"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert ingest.returncode == 0, ingest.stderr[-3000:]
    finally:
        first.stop()
    # The in-memory broker restarted: same address, topics recreated, their data gone.
    second = start_local_broker(port=port)
    try:
        new = _produce(settings, tmp_path, customers=20, seed=8)
        refused = subprocess.run(
            [sys.executable, "-m", "cdp", "--config", str(config), "ingest", "--until-idle"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert refused.returncode == 2, refused.stderr[-3000:]
        assert "Traceback" not in refused.stderr
        assert "past the partition's end" in refused.stderr
        assert "topic 'o.purchases' partition" in refused.stderr
        assert "--offset-reset earliest" in refused.stderr
        with connect(tmp_path / "lost.duckdb") as con:
            before = con.execute("SELECT count(*) FROM events").fetchone()[0]

        reset = subprocess.run(
            [
                sys.executable,
                "-m",
                "cdp",
                "--config",
                str(config),
                "ingest",
                "--until-idle",
                "--offset-reset",
                "earliest",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert reset.returncode == 0, reset.stderr[-3000:]
        assert f"consumed {new:,}" in reset.stdout
        # The reset was stored: a plain run goes on from there, with nothing to refuse.
        again = subprocess.run(
            [sys.executable, "-m", "cdp", "--config", str(config), "ingest", "--until-idle"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert again.returncode == 0, again.stderr[-3000:]
        assert "consumed 0:" in again.stdout
    finally:
        second.stop()
    stored = int(re.search(r"stored ([\d,]+), ", reset.stdout).group(1).replace(",", ""))
    with connect(tmp_path / "lost.duckdb") as con:
        after = con.execute("SELECT count(*) FROM events").fetchone()[0]
    # The new broker's events were read from its start: none skipped.
    assert stored > 0 and after == before + stored


@pytest.mark.slow
def test_a_wedged_validator_turns_healthz_503_and_cdp_run_exits_non_zero(own_broker, tmp_path):
    port = free_port()
    config = _config(
        tmp_path,
        own_broker.bootstrap_servers,
        "wedged",
        service={"listen": f"127.0.0.1:{port}", "stuck_after_s": 3},
        kafka={"max_poll_interval_ms": 12000},
    )
    settings = load_settings(config)
    _produce(settings, tmp_path, customers=50, seed=11)
    log = tmp_path / "run.log"
    run = _start(config, log, "-v", "run")
    healthz = f"http://127.0.0.1:{port}/healthz"
    try:
        _wait(lambda: "first build" in log.read_text(errors="replace"), run, log, 120)
        assert _get(healthz)[0] == 200
        validator = _validator(run)
        os.kill(validator, signal.SIGSTOP)  # alive, answering nothing
        _produce(settings, tmp_path, customers=200, seed=12)
        statuses = []
        deadline = time.monotonic() + 60
        while run.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                statuses.append(_get(healthz))
            time.sleep(0.5)
        run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
    assert (503, "stuck") in {(code, json.loads(body)["status"]) for code, body in statuses}
    printed = _printed(log)
    assert run.returncode not in (0, None), log.read_text()[-3000:]
    assert "validator process did not answer within 12 s" in printed
    assert "Traceback" not in printed


def _validator(process: subprocess.Popen) -> int:
    validator = validator_process_of(process.pid)
    assert validator is not None, "the validator process was not found"
    return validator
