import hashlib
import json
import random
from datetime import UTC, datetime, timedelta

import duckdb
import pyarrow.parquet as pq
import pytest

from cdp.errors import ExportError
from cdp.processing.activation.destinations import RETRY_AFTER_MAX_S, backoff_s, retry_after_s
from cdp.processing.activation.export import run_export
from cdp.processing.segmentation.config import load_segment_config
from cdp.processing.stages.run import run_build
from tests.processing.store import AS_OF, days_ago, event, order, settings, store
from tests.processing.webhook_server import webhook_receiver

T2, T3, T4 = (AS_OF + timedelta(days=d) for d in (20, 45, 60))


def _config(webhook_url: str = "http://127.0.0.1:9/hook", consent: str = "none"):
    text = f"""
[destinations.files]
type = "files"

[destinations.audiences]
type = "ad_audience"
consent = "none"
default_country_code = "44"

[destinations.hook]
type = "webhook"
url = "{webhook_url}"
batch_size = 2
max_attempts = 3
backoff_s = 0.01
timeout_s = 0.5

[[segments]]
name = "recent"
rule = "last_order_at within 30 days"
destinations = ["files", "audiences", "hook"]
consent = "{consent}"
traits = ["orders"]
"""
    return load_segment_config(settings(), text)


def _timeline(con):
    """ann: member at t1 and t2, out at t3, back at t4; bob: enters t2, out at t3."""
    store(
        con,
        event("identify", days_ago(60), user_id="ann",
              traits={"email": " Ann@Example.com ", "phone": "020 7946 0000",
                      "consent": {"email": True}}),
        event("identify", days_ago(60), user_id="bob",
              traits={"email": "bob@example.com", "consent": {"email": False}}),
        order("ann", days_ago(5), "10"),
        order("bob", AS_OF + timedelta(days=10), "10"),
        order("ann", AS_OF + timedelta(days=50), "10"),
    )  # fmt: skip


def _export(con, config, out, **kwargs):
    return {
        (r.destination, r.segment): r
        for r in run_export(con, settings(), config, out_dir=out, **kwargs).results
    }


def _rows(path) -> list[tuple[str]]:
    return sorted(
        duckdb.sql(f"SELECT user_id FROM read_csv('{path}', all_varchar=true)").fetchall()
    )


def test_files_diff_correctly_across_builds_enter_stay_exit_reenter(memory_db, tmp_path):
    _timeline(memory_db)
    config = _config()
    seen = {}
    for as_of in (AS_OF, T2, T3, T4):
        run_build(memory_db, settings(), as_of, config)
        result = _export(memory_db, config, tmp_path, destinations=["files"])[("files", "recent")]
        assert result.status == "succeeded", result.message
        folder = tmp_path / "segments" / "recent" / as_of.date().isoformat()
        seen[as_of] = (
            [user for (user,) in _rows(folder / "members.csv")],
            [user for (user,) in _rows(folder / "entered.csv")],
            pq.read_table(folder / "exited.parquet").num_rows,
        )
    assert seen[AS_OF] == (["ann"], ["ann"], 0)
    assert seen[T2] == (["ann", "bob"], ["bob"], 0)
    assert seen[T3] == ([], [], 2)
    assert seen[T4] == (["ann"], ["ann"], 0)


def _first_export(con, tmp_path, destination: str, folder: str):
    """The timeline built as of AS_OF and exported to one destination: its folder."""
    _timeline(con)
    config = _config()
    run_build(con, settings(), AS_OF, config)
    _export(con, config, tmp_path, destinations=[destination])
    return tmp_path / folder / "recent" / AS_OF.date().isoformat()


def test_export_files_are_readable_and_the_manifest_matches_them(memory_db, tmp_path):
    folder = _first_export(memory_db, tmp_path, "files", "segments")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["counts"] == {"members": 1, "entered": 1, "exited": 0}
    assert manifest["segment"] == "recent" and manifest["as_of"] == "2026-06-30"
    for name, entry in manifest["files"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == entry["sha256"]
    assert {f.name for f in folder.iterdir()} == set(manifest["files"]) | {"manifest.json"}
    table = pq.read_table(folder / "members.parquet")
    assert table.column_names == ["customer_id", "user_id", "email", "phone", "orders"]
    assert table.column("email").to_pylist() == ["ann@example.com"]
    line = json.loads((folder / "members.jsonl").read_text().splitlines()[0])
    assert line["traits"] == {"orders": 1}
    assert duckdb.sql(
        f"SELECT count(*) FROM read_json('{folder / 'members.jsonl'}')"
    ).fetchall() == [(1,)]
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")], "no temp folders"


def test_ad_audiences_hold_sha256_of_normalized_email_and_e164_phone(memory_db, tmp_path):
    folder = _first_export(memory_db, tmp_path, "audiences", "audiences")
    rows = duckdb.sql(
        f"SELECT email, phone FROM read_csv('{folder / 'audience_add.csv'}')"
    ).fetchall()
    sha = lambda text: hashlib.sha256(text.encode()).hexdigest()  # noqa: E731
    # Trimmed and lower-cased; the national number gets the default country code, its
    # leading 0 dropped: +44 20 7946 0000.
    assert rows == [(sha("ann@example.com"), sha("+442079460000"))]


def test_consent_filters_who_each_export_contains(memory_db, tmp_path):
    _timeline(memory_db)
    config = _config(consent="email")
    run_build(memory_db, settings(), T2, config)
    results = _export(memory_db, config, tmp_path, destinations=["files", "audiences"])
    assert results[("files", "recent")].members == 1  # bob said no to email
    assert results[("audiences", "recent")].members == 2  # this destination asks for none
    folder = tmp_path / "segments" / "recent" / T2.date().isoformat()
    assert _rows(folder / "members.csv") == [("ann",)]


def test_re_exporting_an_as_of_sends_nothing_twice(memory_db, tmp_path):
    _timeline(memory_db)
    with webhook_receiver() as receiver:
        config = _config(receiver.url)
        run_build(memory_db, settings(), T2, config)
        first = _export(memory_db, config, tmp_path)
        again = _export(memory_db, config, tmp_path)
    assert first[("hook", "recent")].entered == 2
    assert {r.status for r in again.values()} == {"skipped"}
    assert len(receiver.changes()) == 2


def test_webhook_retries_server_errors_and_timeouts_with_one_idempotency_key(memory_db, tmp_path):
    _timeline(memory_db)
    with webhook_receiver() as receiver:
        receiver.script = [503, "timeout", 200]
        config = _config(receiver.url)
        run_build(memory_db, settings(), T2, config)
        result = _export(memory_db, config, tmp_path, destinations=["hook"])[("hook", "recent")]
    assert result.status == "succeeded", result.message
    assert receiver.attempts == 3
    assert sorted(receiver.changes()) == sorted(
        ("entered", cid)
        for (cid,) in memory_db.execute("SELECT customer_id FROM customer_profiles").fetchall()
    )
    assert len(receiver.keys) == 1 and len(receiver.keys[0]) == 64


def test_a_webhook_that_stays_down_gets_its_diff_at_the_next_run(memory_db, tmp_path):
    _timeline(memory_db)
    with webhook_receiver() as receiver:
        config = _config(receiver.url)
        run_build(memory_db, settings(), AS_OF, config)
        receiver.script = [500, 500, 500]  # every attempt of the first run fails
        first = _export(memory_db, config, tmp_path)
        assert first[("hook", "recent")].status == "failed"
        assert "after 3 attempts (last: HTTP 500" in first[("hook", "recent")].message
        assert first[("files", "recent")].status == "succeeded"  # not blocked by the hook
        assert receiver.accepted == []

        run_build(memory_db, settings(), T2, config)
        second = _export(memory_db, config, tmp_path)
    assert second[("hook", "recent")].status == "succeeded"
    # ann's entry from the failed run arrives now, with bob's.
    assert sorted(change for change, _ in receiver.changes()) == ["entered", "entered"]
    assert second[("files", "recent")].entered == 1


def test_a_webhook_batch_confirmed_before_a_failure_is_not_sent_again(memory_db, tmp_path):
    store(memory_db, *(order(f"u{i}", days_ago(3), "10") for i in range(5)))
    with webhook_receiver() as receiver:
        config = _config(receiver.url)
        run_build(memory_db, settings(), AS_OF, config)
        receiver.script = [200, 500, 500, 500]  # batch 1 of 3 lands, batch 2 never does
        failed = _export(memory_db, config, tmp_path, destinations=["hook"])
        assert failed[("hook", "recent")].status == "failed"
        run_build(memory_db, settings(), AS_OF + timedelta(hours=1), config)
        _export(memory_db, config, tmp_path, destinations=["hook"])
    customers = [cid for _, cid in receiver.changes()]
    assert len(customers) == 5 and len(set(customers)) == 5


def test_a_client_error_is_not_retried(memory_db, tmp_path):
    _timeline(memory_db)
    with webhook_receiver() as receiver:
        receiver.script = [400]
        config = _config(receiver.url)
        run_build(memory_db, settings(), AS_OF, config)
        result = _export(memory_db, config, tmp_path, destinations=["hook"])[("hook", "recent")]
    assert result.status == "failed" and "HTTP 400" in result.message
    assert receiver.attempts == 1


def test_export_before_any_build_says_what_to_do(memory_db, tmp_path):
    with pytest.raises(ExportError, match="run `cdp build`"):
        run_export(memory_db, settings(), _config(), out_dir=tmp_path)


def test_an_unknown_destination_flag_is_an_error(memory_db, tmp_path):
    _timeline(memory_db)
    run_build(memory_db, settings(), AS_OF, _config())
    with pytest.raises(ExportError, match="unknown destination"):
        run_export(memory_db, settings(), _config(), out_dir=tmp_path, destinations=["crm"])


def test_changes_re_sent_after_a_lost_acknowledgement_keep_their_idempotency_key(
    memory_db, tmp_path
):
    # Five entrants in batches of two. The receiver takes batch 2 but its answer is
    # lost every time, so the run fails with batch 2 unconfirmed; the next run sends
    # what is left, batched afresh, and batch 2's changes must come with the key they
    # had, or the receiver cannot tell they are the ones it already holds.
    store(memory_db, *(order(f"u{i}", days_ago(3), "10") for i in range(5)))
    with webhook_receiver() as receiver:
        config = _config(receiver.url)
        run_build(memory_db, settings(), AS_OF, config)
        receiver.script = [200, "lost", "lost", "lost"]
        failed = _export(memory_db, config, tmp_path, destinations=["hook"])
        assert failed[("hook", "recent")].status == "failed"
        again = _export(memory_db, config, tmp_path, destinations=["hook"])
    assert again[("hook", "recent")].status == "succeeded", again[("hook", "recent")].message
    keys = receiver.keys_by_change()
    assert len(keys) == 5
    assert {change: len(k) for change, k in keys.items()} == dict.fromkeys(keys, 1)


def test_a_429_with_retry_after_waits_as_long_as_the_receiver_asks(memory_db, tmp_path):
    _timeline(memory_db)
    with webhook_receiver() as receiver:
        receiver.script = [(429, {"Retry-After": "1"}), 200]
        config = _config(receiver.url)  # backoff_s = 0.01
        run_build(memory_db, settings(), AS_OF, config)
        result = _export(memory_db, config, tmp_path, destinations=["hook"])[("hook", "recent")]
    assert result.status == "succeeded", result.message
    first, second = receiver.attempt_times
    assert second - first >= 1.0


def test_retry_after_is_read_as_seconds_or_an_http_date_and_capped():
    now = datetime(2015, 10, 21, 7, 27, 30, tzinfo=UTC)
    assert retry_after_s("7", now) == 7
    assert retry_after_s(" 2 ", now) == 2
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", now) == 30
    assert retry_after_s("Wed, 21 Oct 2015 07:00:00 GMT", now) == 0  # already past
    assert retry_after_s("86400", now) == RETRY_AFTER_MAX_S
    assert retry_after_s("Fri, 01 Jan 2100 00:00:00 GMT", now) == RETRY_AFTER_MAX_S
    for unusable in (None, "", "soon", "-5", "1e9999"):
        assert retry_after_s(unusable, now) is None, unusable


def test_the_backoff_grows_exponentially_with_jitter():
    rng = random.Random(1)
    delays = [[backoff_s(0.5, attempt, rng) for _ in range(50)] for attempt in (1, 2, 3)]
    for attempt, drawn in enumerate(delays, start=1):
        ceiling = 0.5 * 2 ** (attempt - 1)
        assert all(ceiling / 2 <= d <= ceiling for d in drawn)
        assert len(set(drawn)) > 40  # spread out, not one fixed delay


def test_an_export_cleans_up_what_a_killed_export_left(memory_db, tmp_path):
    folder = _first_export(memory_db, tmp_path, "files", "segments")
    # What a kill -9 leaves: a 'running' row, and hidden folders holding personal data —
    # a half-written staging folder, or the previous folder retired during the swap.
    memory_db.execute(
        "INSERT INTO export_runs (destination, segment, as_of, started_at, status) "
        "VALUES ('files', 'recent', $day, $at, 'running')",
        {"day": T2.date(), "at": T2},
    )
    leftovers = [
        folder.parent / f".{T2.date().isoformat()}.tmp-k1ll3d_x",
        folder.parent / f".{AS_OF.date().isoformat()}.old-1a2b3c4d",
        tmp_path / "audiences" / "gone_segment" / f".{T2.date().isoformat()}.tmp-abc123",
    ]
    for leftover in leftovers:
        leftover.mkdir(parents=True)
        (leftover / "members.csv").write_text("customer_id,email\nc1,ann@example.com\n")
    unrelated = folder.parent / ".notes"
    unrelated.mkdir()
    # An export to another destination cleans up too: the folders may hold personal data.
    _export(memory_db, _config(), tmp_path, destinations=["audiences"])
    assert [p for p in leftovers if p.exists()] == []
    assert unrelated.exists() and (folder / "manifest.json").exists()
    status, finished, message = memory_db.execute(
        "SELECT status, finished_at, message FROM export_runs WHERE as_of = $day",
        {"day": T2.date()},
    ).fetchall()[0]
    assert status == "interrupted" and finished is not None
    assert "interrupted" in message
