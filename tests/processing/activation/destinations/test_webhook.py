import random
from datetime import UTC, datetime, timedelta

from cdp.processing.activation.destinations.webhook import (
    RETRY_AFTER_MAX_S,
    backoff_s,
    retry_after_s,
)
from cdp.processing.segmentation.config import load_segment_config
from cdp.processing.stages.run import run_build
from tests.processing.activation.scenario import T2, _config, _export, _timeline
from tests.processing.store import AS_OF, days_ago, order, settings, store
from tests.processing.webhook_server import webhook_receiver


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


def test_a_request_that_cannot_be_sent_fails_the_delivery_without_retries(memory_db, tmp_path):
    store(memory_db, order("ann", days_ago(3), "10"))
    with webhook_receiver() as receiver:
        config = load_segment_config(
            settings(),
            f"""
[destinations.hook]
type = "webhook"
url = "{receiver.url}"
headers = {{ "X-Token" = "line\\nbreak" }}

[[segments]]
name = "recent"
rule = "last_order_at within 30 days"
destinations = ["hook"]
consent = "none"
""",
        )
        run_build(memory_db, settings(), AS_OF, config)
        result = _export(memory_db, config, tmp_path)[("hook", "recent")]
    assert result.status == "failed"
    assert "Invalid header value" in result.message
    assert receiver.attempts == 0
