import random
import threading
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from cdp.ingest.events import EVENT_ADAPTER, FAMILY_OF_TYPE
from cdp.ingest.validation import RawMessage, validate_batch
from cdp.storage import event_store
from cdp.storage.event_store import stored_offsets, write_batch
from tests.helpers import encode, event, one_of_each_type


def _batch(bodies, topic="t", partition=0, start=0):
    return validate_batch(
        [RawMessage(encode(b), topic, partition, start + n) for n, b in enumerate(bodies)]
    )


def test_typed_columns_are_extracted_from_the_payload(memory_db):
    batch = _batch(
        [
            event(
                "order_completed",
                "e-1",
                properties={
                    "order_id": " o-1 ",
                    "total": "39.98",
                    "currency": "eur",
                    "discount": "2.00",
                },
            )
        ]
    )
    write_batch(memory_db, batch.events, batch.dead_letters)
    row = memory_db.execute(
        "SELECT order_id, revenue::VARCHAR, discount::VARCHAR, currency, utm_source, channel,"
        " occurred_at = TIMESTAMPTZ '2026-03-01 11:00:00+00' FROM events"
    ).fetchone()
    assert row == ("o-1", "39.9800", "2.0000", "EUR", "google", "web", True)


def test_currency_defaults_to_usd_as_in_the_segment_spec(memory_db):
    batch = _batch([event("order_completed", "e-1", properties={"order_id": "o", "revenue": 5})])
    write_batch(memory_db, batch.events, batch.dead_letters)
    assert memory_db.execute("SELECT currency, revenue FROM events").fetchone()[0] == "USD"


def test_resent_event_id_is_stored_once_and_its_copy_recorded(memory_db):
    body = event("page_viewed", "same-id")
    batch = _batch([body, body, body])
    result = write_batch(memory_db, batch.events, batch.dead_letters)
    assert (result.stored, result.duplicates) == (1, 2)
    assert memory_db.execute("SELECT count(*) FROM events").fetchone()[0] == 1
    copies = memory_db.execute("SELECT source_offset FROM duplicate_events ORDER BY 1").fetchall()
    assert copies == [(1,), (2,)]


def test_writing_the_same_batch_twice_changes_nothing(memory_db):
    batch = _batch([*one_of_each_type(), {"bad": True}])
    write_batch(memory_db, batch.events, batch.dead_letters)
    again = write_batch(memory_db, batch.events, batch.dead_letters)
    assert (again.stored, again.duplicates, again.dead_lettered) == (0, 0, 0)
    counts = memory_db.execute(
        "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM dead_letters),"
        " (SELECT count(*) FROM duplicate_events)"
    ).fetchone()
    assert counts == (len(FAMILY_OF_TYPE), 1, 0)


def test_offsets_are_stored_with_the_batch(memory_db):
    batch = _batch(one_of_each_type(), topic="t", partition=3)
    write_batch(
        memory_db, batch.events, batch.dead_letters, group_id="g", next_offsets={("t", 3): 12}
    )
    assert stored_offsets(memory_db, "g") == {("t", 3): 12}
    assert stored_offsets(memory_db, "other") == {}


def test_a_failing_write_stores_neither_rows_nor_offsets(memory_db):
    batch = _batch(one_of_each_type())
    broken_dead_letters = pa.table({"source_topic": [None]})  # violates NOT NULL columns
    with pytest.raises(Exception):  # noqa: B017 - any DuckDB error must roll back
        write_batch(
            memory_db, batch.events, broken_dead_letters, group_id="g", next_offsets={("t", 0): 12}
        )
    assert memory_db.execute("SELECT count(*) FROM events").fetchone()[0] == 0
    assert stored_offsets(memory_db, "g") == {}


def test_typed_columns_hold_the_values_validation_read(memory_db):
    # Lax but valid forms: numbers as text and text as numbers, lower-case currency,
    # identifiers padded with whitespace that validation strips (tab, no-break space).
    bodies = [
        event(
            "product_added",
            "lax-1",
            properties={
                "product_id": " \t p-1\u00a0\n ",
                "cart_id": "\u3000c-1\n",
                "price": 19.99,
                "quantity": "3",
                "currency": "eur",
            },
        ),
        event(
            "order_completed",
            "lax-2",
            properties={
                "order_id": " o-1\t",
                "revenue": "1e3",
                "discount": 0.5,
                "products": [{"product_id": "p", "quantity": 2.0}],
            },
        ),
        event(
            "product_viewed",
            "lax-3",
            properties={"product_id": "p-3", "price": "99999999999999.9999", "quantity": 2**31 - 1},
        ),
        *one_of_each_type(),
    ]
    batch = _batch(bodies)
    assert batch.dead_letters.num_rows == 0, batch.dead_letters.to_pylist()
    write_batch(memory_db, batch.events, batch.dead_letters)
    columns = (
        "product_id",
        "cart_id",
        "order_id",
        "price",
        "quantity",
        "revenue",
        "discount",
        "currency",
    )
    stored = {
        row[0]: row[1:]
        for row in memory_db.execute(
            f"SELECT event_id, {', '.join(columns)} FROM events"
        ).fetchall()
    }
    for body in bodies:
        validated = EVENT_ADAPTER.validate_json(encode(body))
        props = validated.get("properties") or {}
        revenue = (
            coalesce(props.get("total"), props.get("revenue"))
            if validated["type"] in ("order_completed", "order_refunded", "order_cancelled")
            else None
        )
        expected = (
            props.get("product_id"),
            props.get("cart_id"),
            props.get("order_id"),
            props.get("price"),
            props.get("quantity"),
            revenue,
            props.get("discount"),
            props.get("currency") or "USD",
        )
        assert stored[validated["event_id"]] == expected, validated["event_id"]


def coalesce(*values):
    return next((value for value in values if value is not None), None)


def test_the_copy_kept_of_an_id_sent_twice_in_one_batch_is_the_first_one(memory_db):
    # Many copies, so that keeping the first is not luck.
    bodies = [event("page_viewed", f"id-{n % 500}") for n in range(20_000)]
    batch = _batch(bodies)
    result = write_batch(memory_db, batch.events, batch.dead_letters)
    assert (result.stored, result.duplicates) == (500, 19_500)
    kept = memory_db.execute("SELECT max(source_offset) FROM events").fetchone()[0]
    assert kept == 499


def test_each_id_sent_several_times_in_one_batch_keeps_its_first_offset_whatever_the_order(
    memory_db,
):
    rng = random.Random(7)
    ids = [f"id-{rng.randrange(300)}" for _ in range(2_000)]
    batch = _batch([event("page_viewed", event_id) for event_id in ids])
    result = write_batch(memory_db, batch.events, batch.dead_letters)
    first_offsets = {}
    for offset, event_id in enumerate(ids):
        first_offsets.setdefault(event_id, offset)
    assert (result.stored, result.duplicates) == (len(first_offsets), 2_000 - len(first_offsets))
    kept = dict(memory_db.execute("SELECT event_id, source_offset FROM events").fetchall())
    assert kept == first_offsets
    copies = memory_db.execute("SELECT source_offset FROM duplicate_events").fetchall()
    assert sorted(offset for (offset,) in copies) == sorted(
        set(range(2_000)) - set(first_offsets.values())
    )


def test_an_id_stored_by_an_earlier_batch_is_a_duplicate_and_the_rest_of_the_batch_stored(
    memory_db,
):
    first = _batch([event("page_viewed", "early")], start=0)
    write_batch(memory_db, first.events, first.dead_letters)
    later = _batch(
        [event("page_viewed", "new-1"), event("page_viewed", "early"), event("cart_viewed", "n2")],
        start=1,
    )
    result = write_batch(
        memory_db, later.events, later.dead_letters, group_id="g", next_offsets={("t", 0): 4}
    )
    assert (result.stored, result.duplicates) == (2, 1)
    assert memory_db.execute("SELECT count(*) FROM events").fetchone()[0] == 3
    assert memory_db.execute("SELECT source_offset FROM duplicate_events").fetchall() == [(2,)]
    assert stored_offsets(memory_db, "g") == {("t", 0): 4}


def _at(days: float) -> str:
    return (datetime(2026, 3, 1, tzinfo=UTC) + timedelta(days=days)).isoformat()


def _viewed(event_id: str, days: float) -> dict:
    return event("page_viewed", event_id, timestamp=_at(days))


def test_a_copy_sent_again_in_a_later_batch_within_the_window_is_recorded_not_stored(memory_db):
    write_batch(memory_db, *_tables(_batch([_viewed("a", 0), _viewed("b", 3)])))
    again = _batch([_viewed("a", 0)], start=10)  # a producer retry: new offset, same event
    result = write_batch(memory_db, *_tables(again))
    assert (result.stored, result.duplicates) == (0, 1)
    assert _ids_stored(memory_db) == [("a", 1), ("b", 1)]
    assert memory_db.execute("SELECT event_id, source_offset FROM duplicate_events").fetchall() == [
        ("a", 10)
    ]


@pytest.mark.parametrize("together", [False, True], ids=["apart", "in-one-batch"])
def test_a_copy_is_found_while_another_partition_is_read_a_year_ahead(memory_db, together):
    # A replay reads partitions at their own pace: one may be far ahead of another in
    # event time. The window follows each partition's own newest event.
    original = _batch([_viewed("a", -365)], partition=0)
    ahead = _batch([_viewed("z", 0)], partition=1)
    if together:
        both = pa.concat_tables([original.events, ahead.events])
        write_batch(memory_db, both, original.dead_letters)
    else:
        write_batch(memory_db, *_tables(original))
        write_batch(memory_db, *_tables(ahead))
    again = _batch([_viewed("a", -365)], partition=0, start=1)
    result = write_batch(memory_db, *_tables(again))
    assert (result.stored, result.duplicates) == (0, 1)
    assert _ids_stored(memory_db) == [("a", 1), ("z", 1)]


def test_the_ids_held_stay_bounded_while_a_partition_is_replayed_behind_another(
    memory_db, monkeypatch
):
    # The newest event of all partitions stands still while partition 0 catches up.
    monkeypatch.setattr(event_store, "_PRUNE_ABOVE", 10)
    window = timedelta(days=2)
    ahead = _batch([_viewed("z", 0)], partition=1)
    write_batch(memory_db, *_tables(ahead), duplicate_window=window)
    for day in range(-60, 0):
        bodies = [_viewed(f"d{day}-{n}", day + n / 10) for n in range(5)]
        batch = _batch(bodies, partition=0, start=(day + 60) * 5)
        write_batch(memory_db, *_tables(batch), duplicate_window=window)
    held, oldest = memory_db.execute(
        "SELECT count(*), min(occurred_at) FROM recent_event_ids WHERE source_partition = 0"
    ).fetchone()
    assert held <= 2 * 3 * 5 + 10  # of the 300 stored: about twice its window, at most
    assert oldest <= datetime.fromisoformat(_at(-1 + 0.4)) - window  # and all of it


def test_files_loaded_one_after_another_share_one_window(memory_db):
    # Each file is a source of its own; a window per file would keep the last days of
    # every file ever loaded.
    window = timedelta(days=7)
    older = _batch([_viewed("a", -100)], topic="file:/data/2025.jsonl")
    newer = _batch([_viewed("b", 0)], topic="file:/data/2026.jsonl")
    write_batch(memory_db, *_tables(older), duplicate_window=window)
    write_batch(memory_db, *_tables(newer), duplicate_window=window)
    held = memory_db.execute("SELECT event_id FROM recent_event_ids").fetchall()
    assert held == [("b",)]


def test_a_copy_of_an_event_older_than_the_window_is_stored_again(memory_db):
    window = timedelta(days=7)
    write_batch(memory_db, *_tables(_batch([_viewed("old", 0)])), duplicate_window=window)
    later = _batch([_viewed("new", 30)], start=1)
    write_batch(memory_db, *_tables(later), duplicate_window=window)
    late = _batch([_viewed("old", 0)], start=2)  # e.g. a history file loaded twice
    result = write_batch(memory_db, *_tables(late), duplicate_window=window)
    assert (result.stored, result.duplicates) == (1, 0)
    assert _ids_stored(memory_db) == [("new", 1), ("old", 2)]
    # ...and found again by a window wide enough to hold it, refilled from events.
    wider = _batch([_viewed("old", 0)], start=3)
    result = write_batch(memory_db, *_tables(wider), duplicate_window=timedelta(days=40))
    assert (result.stored, result.duplicates) == (0, 1)


def test_the_ids_checked_stay_within_nine_eighths_of_the_window_as_time_moves_on(memory_db):
    window = timedelta(days=8)
    for day in range(60):
        batch = _batch([_viewed(f"d{day}-{n}", day + n / 10) for n in range(5)], start=day * 5)
        write_batch(memory_db, *_tables(batch), duplicate_window=window)
    oldest, held = memory_db.execute(
        "SELECT min(occurred_at), count(*) FROM recent_event_ids"
    ).fetchone()
    newest = datetime.fromisoformat(_at(59.4))
    assert newest - window * 9 / 8 <= oldest <= newest - window
    assert held <= 5 * 10  # at most nine days of five events, of the 300 stored


def _tables(batch):
    return batch.events, batch.dead_letters


def _ids_stored(con):
    return con.execute("SELECT event_id, count(*) FROM events GROUP BY ALL ORDER BY 1").fetchall()


def test_the_window_is_measured_in_absolute_time_whatever_the_session_time_zone(memory_db):
    memory_db.execute("SET TimeZone = 'Europe/Berlin'")  # DuckDB hands times back in it
    newest = event("page_viewed", "new", timestamp="2026-10-30T12:00:00Z")  # after DST ends
    write_batch(memory_db, *_tables(_batch([newest])))
    older = event("page_viewed", "old", timestamp="2026-01-01T12:00:00Z")
    write_batch(memory_db, *_tables(_batch([older], start=1)))  # reads the newest back
    span = memory_db.execute(
        "SELECT epoch(newest_event_at) - epoch(covered_from) FROM duplicate_window"
    ).fetchone()[0]
    assert span == timedelta(days=7).total_seconds()


def test_the_ids_held_are_those_of_seven_days_of_absolute_time_across_a_clock_change(memory_db):
    # Daylight saving time ends in Berlin on 2026-10-25: seven calendar days before
    # 2026-10-30 12:00 UTC there begin at 11:00 UTC, seven days of time at 12:00.
    memory_db.execute("SET TimeZone = 'Europe/Berlin'")
    bodies = [
        event("page_viewed", "outside", timestamp="2026-10-23T11:30:00Z"),
        event("page_viewed", "inside", timestamp="2026-10-23T12:30:00Z"),
        event("page_viewed", "newest", timestamp="2026-10-30T12:00:00Z"),
    ]
    write_batch(memory_db, *_tables(_batch(bodies)), duplicate_window=timedelta(days=7))
    held = memory_db.execute("SELECT event_id FROM recent_event_ids ORDER BY 1").fetchall()
    assert held == [("inside",), ("newest",)]


def test_writers_on_one_database_in_one_process_store_each_id_once_without_conflicts(memory_db):
    # Several consumers of one group in one process, each on its own cursor, may be
    # sent copies of one event on different partitions at the same moment.
    writers, batches, ids_per_batch = 4, 25, 8
    errors: list[BaseException] = []
    start = threading.Barrier(writers, timeout=30)

    def write(partition: int) -> None:
        cursor = memory_db.cursor()
        start.wait()
        try:
            for number in range(batches):
                # All within the window, however far apart the writers get.
                bodies = [_viewed(f"b{number}-{n}", number / 100) for n in range(ids_per_batch)]
                batch = _batch(bodies, partition=partition, start=number * ids_per_batch)
                write_batch(cursor, *_tables(batch))
        except BaseException as error:  # reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(p,)) for p in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a writer is stuck"
    assert errors == []
    stored = _ids_stored(memory_db)
    assert len(stored) == batches * ids_per_batch
    assert {copies for _, copies in stored} == {1}
    recorded = memory_db.execute("SELECT count(*) FROM duplicate_events").fetchone()[0]
    assert recorded == (writers - 1) * batches * ids_per_batch


def test_refilling_the_window_from_every_stored_event_runs_on_every_thread(memory_db, monkeypatch):
    # Ingest runs DuckDB on one thread ([ingest] duckdb_threads); the refill reads the
    # whole history, once, and gets DuckDB's default for that statement alone.
    memory_db.execute("RESET threads")
    default = memory_db.execute("SELECT current_setting('threads')").fetchone()[0]
    ingest_threads = default + 1  # not DuckDB's default, on any machine
    memory_db.execute("SET threads = $threads", {"threads": ingest_threads})
    seen = []
    real = event_store.execute_script

    def execute_script(con, script, params=None):
        if script is event_store._REFILL_RECENT_IDS:
            seen.append(con.execute("SELECT current_setting('threads')").fetchone()[0])
        real(con, script, params)

    monkeypatch.setattr(event_store, "execute_script", execute_script)
    write_batch(memory_db, *_tables(_batch([_viewed("first", 0)])))
    assert seen == [default]
    assert memory_db.execute("SELECT current_setting('threads')").fetchone()[0] == ingest_threads
