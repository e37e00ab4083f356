"""/healthz's verdicts: 503 only where restarting cdp may help."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from cdp.ingest.consumer import BrokerHealth, IngestStats
from cdp.monitoring import assess_health
from cdp.processing.jobs.scheduler import ServiceJobs

NOW = 10_000.0


def _consumer(*, turned_ago=0.0, stored_ago=None, lag=0, in_flight=0, caught_up=True, down=None):
    stats = IngestStats(started_at=NOW - 3600)
    stats.last_stored_at = None if stored_ago is None else NOW - stored_ago
    broker = BrokerHealth(lag={("store.browse", 0): lag})
    if down is not None:
        broker.reachable, broker.unreachable_since, broker.last_reason = False, NOW - down, "x"
    done = threading.Event()
    if caught_up:
        done.set()
    return SimpleNamespace(
        stats=stats,
        broker=broker,
        caught_up=done,
        loop_turned_at=NOW - turned_ago,
        batches_in_flight=in_flight,
    )


def _verdict(consumer, jobs=None):
    health = assess_health(consumer, jobs or ServiceJobs(), stuck_after_s=300, now=NOW)
    return health.healthy, health.status


def test_a_consumer_keeping_up_is_ok_and_one_reading_its_backlog_is_starting():
    assert _verdict(_consumer(stored_ago=1)) == (True, "ok")
    assert _verdict(_consumer(stored_ago=1, lag=500, caught_up=False)) == (True, "starting")


def test_an_idle_consumer_with_nothing_waiting_is_ok_however_long_since_its_last_batch():
    assert _verdict(_consumer(stored_ago=86_400)) == (True, "ok")


def test_a_broker_outage_is_reported_but_healthy_however_long():
    assert _verdict(_consumer(down=10)) == (True, "broker unreachable")
    assert _verdict(_consumer(down=86_400, lag=0)) == (True, "broker unreachable")


def test_records_waiting_with_nothing_stored_for_too_long_is_stuck():
    assert _verdict(_consumer(stored_ago=301, lag=10)) == (False, "stuck")
    assert _verdict(_consumer(stored_ago=301, in_flight=2)) == (False, "stuck")
    assert _verdict(_consumer(stored_ago=299, lag=10)) == (True, "ok")


def test_a_poll_loop_that_stopped_turning_is_stuck_even_during_an_outage():
    assert _verdict(_consumer(turned_ago=301, down=400)) == (False, "stuck")


def test_a_failed_part_is_failed():
    jobs = ServiceJobs()
    jobs.fail("the scheduler has run no job for 61 s")
    assert _verdict(_consumer(), jobs) == (False, "failed")
