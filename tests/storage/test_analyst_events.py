import duckdb

from cdp.settings import Settings
from cdp.storage import analyst_events
from cdp.storage.analyst import publish_analyst_database
from cdp.storage.database import connect
from cdp.storage.paths import events_folder
from tests.processing.store import days_ago, order, store


def test_parts_beyond_the_limit_are_merged_without_losing_or_doubling_an_event(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(analyst_events, "PART_LIMIT", 4)
    settings = Settings(storage={"db_path": tmp_path / "live.duckdb"})
    folder = None
    named_before: set[str] = set()
    with connect(settings.storage.db_path) as con:
        for n in range(9):
            store(con, order(f"c{n}", days_ago(n + 1), "10"))
            published = publish_analyst_database(con, settings)
            folder = events_folder(published.path)
            with duckdb.connect(str(published.path), read_only=True) as snapshot:
                [(files,)] = snapshot.execute("SELECT event_parts FROM publish_info").fetchall()
                users = snapshot.execute("SELECT user_id FROM events ORDER BY 1").fetchall()
            named = {f.split("/")[0] for f in files}
            assert users == [(f"c{k}",) for k in range(n + 1)]
            assert len(named) <= 4
            # On disk: this snapshot's parts and the previous one's, which an open
            # reader may still be using; nothing else.
            assert {p.name for p in folder.iterdir()} == named | named_before
            named_before = named
    assert max(int(name[5:]) for name in named) > 9  # some parts were merges


def test_a_part_files_missing_from_disk_make_the_next_publish_rewrite_every_event(tmp_path):
    settings = Settings(storage={"db_path": tmp_path / "live.duckdb"})
    with connect(settings.storage.db_path) as con:
        store(con, order("ann", days_ago(2), "10"))
        first = publish_analyst_database(con, settings)
        for part in events_folder(first.path).iterdir():
            for file in part.iterdir():
                file.unlink()
        store(con, order("bob", days_ago(1), "10"))
        second = publish_analyst_database(con, settings)
    with duckdb.connect(str(second.path), read_only=True) as snapshot:
        users = snapshot.execute("SELECT user_id FROM events ORDER BY 1").fetchall()
    assert "events" not in second.incremental
    assert users == [("ann",), ("bob",)]
