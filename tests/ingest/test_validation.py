import os
import subprocess
import sys
import time

import pytest

from cdp.ingest.events import Family
from cdp.ingest.validation import RawMessage, validate_batch
from tests.helpers import encode, event, one_of_each_type

TOPICS = {"t.purchases": Family.PURCHASE, "t.browse": Family.BROWSE}


def _one(value: bytes, topic: str = "t.browse", max_event_bytes: int = 10_000):
    batch = validate_batch([RawMessage(value, topic, 0, 7)], TOPICS, max_event_bytes)
    assert batch.events.num_rows + batch.dead_letters.num_rows == 1
    return batch


@pytest.mark.parametrize(
    ("value", "kind", "reason_part"),
    [
        (b"", "empty", "empty message"),
        (b'{"event_id": "e", "type": ', "invalid_json", "not valid JSON"),
        (b"\xff\xfe{}", "not_utf8", "not UTF-8"),
        (b"[1, 2]", "invalid_json", "not an object"),
        (
            encode(event("page_viewed", "e", type="page_teleported")),
            "unknown_type",
            "unknown event type 'page_teleported'",
        ),
        (encode(event("page_viewed", "e", timestamp="yesterday")), "invalid_event", "timestamp:"),
        (
            encode(event("product_viewed", "e", properties={"product_id": "p", "price": "x"})),
            "invalid_event",
            "properties.price",
        ),
        (encode(event("order_completed", "e")), "wrong_topic", "arrived on topic 't.browse'"),
    ],
)
def test_bad_input_is_dead_lettered_with_kind_and_readable_reason(value, kind, reason_part):
    batch = _one(value)
    row = batch.dead_letters.to_pylist()[0]
    assert row["error_kind"] == kind
    assert reason_part in row["reason"]
    assert row["raw"] == value
    assert (row["source_topic"], row["source_partition"], row["source_offset"]) == (
        "t.browse",
        0,
        7,
    )


def test_oversized_payload_is_dead_lettered_without_parsing():
    value = encode(event("page_viewed", "e", padding="x" * 5000))
    row = _one(value, max_event_bytes=1000).dead_letters.to_pylist()[0]
    assert row["error_kind"] == "oversized"
    assert "limit (ingest.max_event_bytes) is 1000" in row["reason"]


def test_missing_field_reason_names_the_field():
    body = event("page_viewed", "e")
    del body["timestamp"]
    row = _one(encode(body)).dead_letters.to_pylist()[0]
    assert row["reason"] == "timestamp: required field is missing"


def test_sources_outside_the_topic_map_accept_every_family():
    messages = [
        RawMessage(encode(body), "file:/x.jsonl", 0, n) for n, body in enumerate(one_of_each_type())
    ]
    batch = validate_batch(messages, TOPICS)
    assert batch.events.num_rows == len(messages)
    assert batch.dead_letters.num_rows == 0


def test_every_message_comes_out_exactly_once():
    values = [encode(event("page_viewed", f"e{n}")) for n in range(50)] + [b"nope"] * 7
    batch = validate_batch([RawMessage(v, "t.browse", 1, n) for n, v in enumerate(values)], TOPICS)
    offsets = (
        batch.events["source_offset"].to_pylist() + batch.dead_letters["source_offset"].to_pylist()
    )
    assert sorted(offsets) == list(range(57))
    assert batch.consumed == 57


def test_event_rows_carry_the_canonical_type_family_and_utc_time():
    row = _one(encode(event("page_viewed", "e", type="Page Viewed"))).events.to_pylist()[0]
    assert (row["type"], row["family"]) == ("page_viewed", "browse")
    assert row["occurred_at"].isoformat() == "2026-03-01T11:00:00+00:00"


def test_the_validator_process_exits_when_its_parent_is_killed_outright():
    # A parent that starts the validator, reports its pid, then waits to be killed.
    parent = subprocess.Popen(
        [sys.executable, "-c", (
            "import os, sys, time\n"
            "from cdp.ingest.validation import start_validator_process\n"
            "pool = start_validator_process()\n"
            "print(pool.submit(os.getpid).result(), flush=True)\n"
            "time.sleep(120)\n"
        )],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        worker = int(parent.stdout.readline())
        os.kill(worker, 0)  # running
        parent.kill()  # SIGKILL: no shutdown of the pool
        parent.wait(timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and _running(worker):
            time.sleep(0.2)
        assert not _running(worker), "the validator process outlived its parent"
    finally:
        parent.kill()


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # An exited orphan is reaped by init; until then it shows as a zombie.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ")[1][0] != "Z"
