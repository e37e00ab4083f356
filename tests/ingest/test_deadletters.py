from cdp.ingest import events as event_vocabulary
from cdp.ingest.deadletters import list_dead_letters, replay_dead_letters
from cdp.ingest.validation import RawMessage, validate_batch
from cdp.settings import Settings
from cdp.storage.event_store import write_batch
from tests.helpers import encode, event, offsets_accounted


def _store(con, values):
    batch = validate_batch([RawMessage(v, "file:/s.jsonl", 0, n) for n, v in enumerate(values)])
    write_batch(con, batch.events, batch.dead_letters)


def test_list_shows_reason_source_and_raw_preview(memory_db):
    _store(memory_db, [b"{broken", encode(event("page_viewed", "ok"))])
    rows, total = list_dead_letters(memory_db)
    assert total == 1
    assert rows[0].source == "file:/s.jsonl line 0"
    assert rows[0].error_kind == "invalid_json"
    assert rows[0].raw_preview == "{broken"


def test_replay_after_a_fix_moves_the_good_ones_to_events(memory_db, monkeypatch):
    clicked = encode(event("page_viewed", "newly-known", type="Promotion Clicked"))
    _store(memory_db, [clicked, b"{still broken"])
    assert list_dead_letters(memory_db)[1] == 2

    # The fix: a release that maps one more Segment Spec name.
    monkeypatch.setitem(event_vocabulary._TYPE_LOOKUP, "Promotion Clicked", "page_viewed")
    report = replay_dead_letters(memory_db, Settings())

    assert (report.examined, report.moved_to_events, report.still_failing) == (2, 1, 1)
    assert memory_db.execute("SELECT event_id, type FROM events").fetchall() == [
        ("newly-known", "page_viewed")
    ]
    remaining = memory_db.execute("SELECT replay_attempts, error_kind FROM dead_letters").fetchall()
    assert remaining == [(1, "invalid_json")]
    # Still every source line in exactly one place.
    assert offsets_accounted(memory_db) == [("file:/s.jsonl", 0, 2, 2)]


def test_replay_of_an_event_stored_meanwhile_is_not_stored_twice(memory_db, monkeypatch):
    late = event("page_viewed", "dup", type="Promotion Clicked")
    _store(memory_db, [encode(late)])
    batch = validate_batch([RawMessage(encode(event("page_viewed", "dup")), "t", 0, 0)])
    write_batch(memory_db, batch.events, batch.dead_letters)
    monkeypatch.setitem(event_vocabulary._TYPE_LOOKUP, "Promotion Clicked", "page_viewed")
    report = replay_dead_letters(memory_db, Settings())
    assert (report.moved_to_events, report.already_stored) == (0, 1)
    assert memory_db.execute("SELECT count(*) FROM events").fetchone()[0] == 1
    assert memory_db.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 0
    assert memory_db.execute("SELECT count(*) FROM duplicate_events").fetchone()[0] == 1
