import os
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
from cdp.processing.scheduler import make_scheduler
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
    assert set(jobs) == {"profile-refresh", "nightly-build"}
    for job in jobs.values():
        assert (job.coalesce, job.max_instances, job.misfire_grace_time) == (True, 1, 900)
    assert str(jobs["nightly-build"].trigger.timezone) == "Europe/Paris"


def test_the_nightly_job_builds_then_exports_while_the_refresh_only_builds(tmp_path):
    from tests.processing.store import days_ago, event, order, store

    settings = load_settings(None, {"export": {"out_dir": tmp_path}})
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


@pytest.mark.kafka
def test_cdp_run_ingests_and_builds_on_schedule_then_stops_cleanly(
    isolated_config, kafka_settings, tmp_path
):
    source = tmp_path / "store.jsonl"
    generate_store(source, customers=300, seed=4, end=date(2026, 11, 1))
    create_topics(kafka_settings)
    sent = produce_file(kafka_settings, source).sent
    log = tmp_path / "run.log"
    env = {**os.environ, "CDP_SCHEDULE__REFRESH_MINUTES": "0.05"}  # every 3 s
    process = subprocess.Popen(
        [sys.executable, "-m", "cdp", "--config", str(isolated_config), "-v", "run"],
        stdout=subprocess.PIPE, stderr=log.open("wb"), env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and "refresh build" not in log.read_text(errors="replace"):
        assert process.poll() is None, log.read_text()[-3000:]
        time.sleep(0.2)
    time.sleep(4)  # let ingest catch up and another refresh run
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
