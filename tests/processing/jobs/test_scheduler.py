import os
import re
import signal
import subprocess
import sys
import time
from datetime import date

import pytest

from cdp.errors import ConfigError
from cdp.ingest.generator import generate_store
from cdp.ingest.producer import produce_file
from cdp.ingest.topics import create_topics
from cdp.processing.jobs.scheduler import make_scheduler
from cdp.settings import load_settings
from cdp.storage.database import connect, memory_database


def test_jobs_have_ids_never_overlap_coalesce_and_tolerate_late_starts():
    settings = load_settings(
        None, {"schedule": {"misfire_grace_s": 900, "timezone": "Europe/Paris"}}
    )
    scheduler = make_scheduler(settings, memory_database())
    scheduler.start(paused=True)  # job defaults apply once jobs are added to a started scheduler
    jobs = {job.id: job for job in scheduler.get_jobs()}
    scheduler.shutdown(wait=False)
    assert set(jobs) == {"profile-refresh", "nightly-build", "heartbeat"}
    for job in jobs.values():
        assert (job.coalesce, job.max_instances, job.misfire_grace_time) == (True, 1, 900)
    assert str(jobs["nightly-build"].trigger.timezone) == "Europe/Paris"


def test_the_nightly_job_builds_then_exports_while_the_refresh_only_builds(tmp_path):
    from tests.processing.store import days_ago, event, order, store

    settings = load_settings(
        None, {"export": {"out_dir": tmp_path}, "storage": {"db_path": tmp_path / "x.duckdb"}}
    )
    con = memory_database()
    store(
        con,
        order("ann", days_ago(400), "10"),  # a lost buyer: in win_back
        event("identify", days_ago(400), user_id="ann", traits={"consent": {"email": True}}),
    )
    scheduler = make_scheduler(settings, con)
    jobs = {job.id: job for job in scheduler.get_jobs()}
    jobs["profile-refresh"].func(*jobs["profile-refresh"].args)
    assert con.execute("SELECT count(*) FROM export_runs").fetchall() == [(0,)]
    jobs["nightly-build"].func(*jobs["nightly-build"].args)
    builds = con.execute("SELECT count(*) FROM builds WHERE status = 'succeeded'").fetchall()
    exported = con.execute(
        "SELECT destination, status, members FROM export_runs WHERE segment = 'win_back' ORDER BY 1"
    ).fetchall()
    assert builds == [(2,)]
    # Consent to email but not to ads: in the files, not in the ad audience.
    assert exported == [("ad_audiences", "succeeded", 0), ("files", "succeeded", 1)]
    assert list(tmp_path.glob("segments/win_back/*/manifest.json"))
    assert (tmp_path / "x.analyst.duckdb").exists() and (tmp_path / "x.report.html").exists()


def test_scheduled_builds_wait_while_ingest_reads_the_backlog_unless_the_broker_is_down(
    tmp_path,
):
    """A refresh due while ingest is still reading the backlog would build and publish
    a part of it (seen in CI: a 3 s refresh published an empty analyst database before
    the consumer had joined its group). With the broker down, what is stored is built."""
    import threading

    from tests.processing.store import days_ago, order, store

    settings = load_settings(
        None, {"export": {"out_dir": tmp_path}, "storage": {"db_path": tmp_path / "x.duckdb"}}
    )
    con = memory_database()
    store(con, order("ann", days_ago(30), "10"))
    caught_up, reachable = threading.Event(), [True]
    scheduler = make_scheduler(
        settings,
        con,
        caught_up=caught_up,
        stop=threading.Event(),
        broker_reachable=lambda: reachable[0],
    )
    jobs = {job.id: job for job in scheduler.get_jobs()}

    def builds() -> int:
        return con.execute("SELECT count(*) FROM builds").fetchall()[0][0]

    jobs["profile-refresh"].func(*jobs["profile-refresh"].args)
    jobs["nightly-build"].func(*jobs["nightly-build"].args)
    assert builds() == 0 and not (tmp_path / "x.analyst.duckdb").exists()

    reachable[0] = False
    jobs["profile-refresh"].func(*jobs["profile-refresh"].args)
    assert builds() == 1

    reachable[0] = True
    caught_up.set()
    jobs["first-build"].func(*jobs["first-build"].args)
    jobs["profile-refresh"].func(*jobs["profile-refresh"].args)
    assert builds() == 3


@pytest.mark.parametrize(
    ("section", "value", "message"),
    [
        ({"nightly_cron": "every night"}, None, "schedule.nightly_cron"),
        ({"timezone": "Mars/Olympus"}, None, "schedule.timezone"),
    ],
)
def test_bad_schedule_is_a_config_error_naming_the_key(section, value, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(None, {"schedule": section})


def _start_cdp_run(config, log) -> subprocess.Popen:
    """`cdp run` as a real process, refreshing every 3 s, logging to ``log``."""
    env = {**os.environ, "CDP_SCHEDULE__REFRESH_MINUTES": "0.05"}
    return subprocess.Popen(
        [sys.executable, "-m", "cdp", "--config", str(config), "-v", "run"],
        stdout=subprocess.PIPE,
        stderr=log.open("wb"),
        env=env,
    )


@pytest.mark.kafka
def test_cdp_run_ingests_and_builds_on_schedule_then_stops_cleanly(
    isolated_config, kafka_settings, tmp_path
):
    source = tmp_path / "store.jsonl"
    generate_store(source, customers=300, seed=4, end=date(2026, 11, 1))
    create_topics(kafka_settings)
    sent = produce_file(kafka_settings, source).sent
    log = tmp_path / "run.log"
    process = _start_cdp_run(isolated_config, log)
    deadline = time.monotonic() + 90
    # A refresh that built ("refresh build skipped: ..." is logged while ingest reads
    # the backlog; under load a run stopped after that had built nothing).
    refreshed = re.compile(r"refresh build \d+ succeeded")
    while time.monotonic() < deadline and not refreshed.search(log.read_text(errors="replace")):
        assert process.poll() is None, log.read_text()[-3000:]
        time.sleep(0.2)
    time.sleep(4)  # let another refresh run
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 0, log.read_text()[-3000:]
    assert b"consumed" in out
    with connect(kafka_settings.storage.db_path) as con:
        builds = con.execute("SELECT count(*) FROM builds WHERE status = 'succeeded'").fetchall()[
            0
        ][0]
        profiles = con.execute("SELECT count(*) FROM customer_profiles").fetchall()[0][0]
        stored = con.execute(
            "SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM dead_letters)"
            " + (SELECT count(*) FROM duplicate_events)"
        ).fetchall()[0][0]
    assert builds >= 1 and profiles > 0
    assert 0 < stored <= sent


@pytest.mark.kafka
def test_analysts_read_the_published_copy_while_cdp_run_keeps_ingesting(
    isolated_config, kafka_settings, tmp_path
):
    import duckdb

    from cdp.storage.paths import analyst_path

    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    generate_store(first, customers=200, seed=5, end=date(2026, 11, 1))
    generate_store(second, customers=300, seed=6, end=date(2026, 11, 1))
    create_topics(kafka_settings)
    produce_file(kafka_settings, first)
    analyst = analyst_path(kafka_settings)
    log = tmp_path / "run.log"
    process = _start_cdp_run(isolated_config, log)
    try:
        deadline = time.monotonic() + 90
        while not analyst.exists():  # the first build runs once the backlog is ingested
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        assert "first build" in log.read_text(errors="replace")
        reader = duckdb.connect(str(analyst), read_only=True)
        seen_first = reader.execute("SELECT count(*) FROM events").fetchall()[0][0]
        inode = os.stat(analyst).st_ino

        produce_file(kafka_settings, second)  # cdp run keeps ingesting...
        while os.stat(analyst).st_ino == inode:  # ...and publishes again
            assert process.poll() is None and time.monotonic() < deadline + 60, log.read_text()[
                -3000:
            ]
            time.sleep(0.2)

        # The open connection still reads its whole, unchanged snapshot.
        assert reader.execute("SELECT count(*) FROM events").fetchall()[0][0] == seen_first
        assert reader.execute("SELECT count(*) FROM data_dictionary").fetchall()[0][0] > 100
        reader.close()
        with duckdb.connect(str(analyst), read_only=True) as fresh:
            assert fresh.execute("SELECT count(*) FROM events").fetchall()[0][0] > seen_first

        status = subprocess.run(
            [sys.executable, "-m", "cdp", "--config", str(isolated_config), "status"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status.returncode == 0, status.stderr
        assert "figures from: analyst snapshot" in status.stdout  # the live file is in use
        assert "consumer lag:" in status.stdout and "[0]  end" in status.stdout
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    assert process.returncode == 0, log.read_text()[-3000:]
