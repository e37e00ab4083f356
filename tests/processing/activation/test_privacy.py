import hashlib
from datetime import timedelta

import duckdb
import pytest

from cdp.errors import ConfigError
from cdp.processing.activation.export import run_export
from cdp.processing.activation.privacy import forget_customer
from cdp.processing.segmentation.config import load_segment_config
from cdp.processing.stages.run import run_build
from cdp.storage.analyst import publish_analyst_database
from cdp.storage.paths import analyst_path
from tests.processing.store import AS_OF, days_ago, event, order, settings, store
from tests.processing.webhook_server import webhook_receiver

TABLES_BY_CUSTOMER = (
    "customer_profiles",
    "customer_rolling_windows",
    "orders",
    "profile_history",
    "customer_consent",
    "segment_membership",
    "segment_membership_history",
    "customer_identities",
    "customer_recommendations",
)


def _config(url: str):
    return load_segment_config(
        settings(),
        f"""
[destinations.hook]
type = "webhook"
url = "{url}"
backoff_s = 0.01

[destinations.audiences]
type = "ad_audience"
consent = "none"

[[segments]]
name = "buyers"
rule = "orders >= 1"
destinations = ["hook", "audiences"]
consent = "none"
""",
    )


def _ann_and_bob(con):
    store(
        con,
        event(
            "identify",
            days_ago(20),
            anonymous_id="a-1",
            user_id="ann",
            traits={"email": "ann@example.com", "consent": {"email": True}},
        ),
        event("page_viewed", days_ago(21), anonymous_id="a-1", properties={"url": "/"}),
        order("ann", days_ago(5), "10"),
        order("bob", days_ago(5), "10"),
    )


def test_forget_deletes_everything_sends_exits_and_keeps_the_customer_out(memory_db, tmp_path):
    _ann_and_bob(memory_db)
    with webhook_receiver() as receiver:
        config = _config(receiver.url)
        run_build(memory_db, settings(), AS_OF, config)
        run_export(memory_db, settings(), config, out_dir=tmp_path)
        ann = memory_db.execute(
            "SELECT customer_id FROM customer_profiles WHERE user_id = 'ann'"
        ).fetchall()[0][0]

        report = forget_customer(memory_db, settings(), config, "email: Ann@Example.com ")

        assert report.customer_id == ann
        assert report.events_deleted == 3  # identify, anonymous page view, order
        assert report.identifiers == 3  # anon:a-1, user:ann, email:ann@example.com
        # The webhook heard the exit at once.
        assert receiver.changes()[-1] == ("exited", ann)
    for table in TABLES_BY_CUSTOMER:
        rows = memory_db.execute(
            f"SELECT count(*) FROM {table} WHERE customer_id = $id", {"id": ann}
        )
        assert rows.fetchall() == [(0,)], table
    remaining = memory_db.execute("SELECT DISTINCT user_id FROM events").fetchall()
    assert remaining == [("bob",)]
    # Nor do the ids of their events stay in the duplicate window.
    windowed = memory_db.execute(
        "SELECT count(*) FROM recent_event_ids WHERE event_id NOT IN (SELECT event_id FROM events)"
    )
    assert windowed.fetchall() == [(0,)]

    # Events from the same identifiers later on are stored, but never profiled again.
    store(
        memory_db,
        order("ann", AS_OF + timedelta(days=1), "99"),
        event(
            "page_viewed", AS_OF + timedelta(days=1), anonymous_id="a-1", properties={"url": "/"}
        ),
    )
    run_build(memory_db, settings(), AS_OF + timedelta(days=2), config)
    profiles = memory_db.execute("SELECT user_id FROM customer_profiles").fetchall()
    assert profiles == [("bob",)]

    # The ad audience learns of the exit at its next export, from the hashes kept.
    run_export(memory_db, settings(), config, out_dir=tmp_path, destinations=["audiences"])
    folder = tmp_path / "audiences" / "buyers" / (AS_OF + timedelta(days=2)).date().isoformat()
    removed = (folder / "audience_remove.csv").read_text().splitlines()
    assert removed[1:] == [f'"{hashlib.sha256(b"ann@example.com").hexdigest()}",']
    assert memory_db.execute(
        "SELECT count(*) FROM export_state WHERE customer_id = $id", {"id": ann}
    ).fetchall() == [(0,)]


def test_forgetting_an_unknown_customer_names_it(memory_db):
    with pytest.raises(ConfigError, match="customer 'cus_nobody': not a known customer id"):
        forget_customer(memory_db, settings(), _config("http://127.0.0.1:9/"), "cus_nobody")


def test_forget_removes_the_staging_copies_a_killed_publish_or_export_left(memory_db, tmp_path):
    # A killed publish copies the previous snapshot (the customer in it) to a hidden
    # file; a killed export leaves a hidden folder of member files. Neither may outlive
    # a forget, even with no analyst database to republish.
    live = settings(storage={"db_path": tmp_path / "live.duckdb"}, export={"out_dir": tmp_path})
    _ann_and_bob(memory_db)
    config = _config("http://127.0.0.1:9/")
    run_build(memory_db, live, AS_OF, config)
    snapshot_copy = tmp_path / ".live.analyst.duckdb.tmp-4242"
    snapshot_copy.write_bytes(b"ann@example.com")
    staging = tmp_path / "audiences" / "buyers" / ".2026-06-30.tmp-ab12cd"
    staging.mkdir(parents=True)
    (staging / "audience_full.csv").write_text("email,phone\nann-sha,\n")
    forget_customer(memory_db, live, config, "user:ann")
    assert not snapshot_copy.exists()
    assert not staging.exists()


def test_forget_republishes_the_analyst_database_without_the_customer(memory_db, tmp_path):
    # Analysts' copy must not keep what was just deleted until the next build, whoever
    # calls forget_customer; with no analyst database there is nothing to republish.
    live = settings(storage={"db_path": tmp_path / "live.duckdb"}, export={"out_dir": tmp_path})
    _ann_and_bob(memory_db)
    config = _config("http://127.0.0.1:9/")
    run_build(memory_db, live, AS_OF, config)
    assert forget_customer(memory_db, live, config, "user:bob").analyst is None

    publish_analyst_database(memory_db, live)
    report = forget_customer(memory_db, live, config, "user:ann")

    assert report.analyst is not None and report.analyst.path == analyst_path(live)
    with duckdb.connect(str(report.analyst.path), read_only=True) as snapshot:
        users = snapshot.execute("SELECT DISTINCT user_id FROM events").fetchall()
        profiles = snapshot.execute("SELECT count(*) FROM customer_profiles").fetchall()
    assert users == [] and profiles == [(0,)]
