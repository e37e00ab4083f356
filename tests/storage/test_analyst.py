import json
import os
import shutil
import subprocess
import sys

import duckdb
import pytest

from cdp.processing.stages.run import run_build
from cdp.settings import Settings
from cdp.storage.analyst import ANALYST_TABLES, LOOKUP_TABLES, publish_analyst_database
from cdp.storage.database import connect
from cdp.storage.paths import analyst_path, events_folder
from tests.processing.store import AS_OF, days_ago, order, store


def test_the_analyst_path_defaults_to_beside_the_live_database(tmp_path):
    settings = Settings(storage={"db_path": tmp_path / "shop.duckdb"})
    assert analyst_path(settings) == tmp_path / "shop.analyst.duckdb"
    custom = Settings(
        storage={"db_path": tmp_path / "a.duckdb", "analyst_db_path": "/srv/x.duckdb"}
    )
    assert str(analyst_path(custom)) == "/srv/x.duckdb"


def test_every_analyst_table_and_column_is_described_in_the_dictionary(published_store):
    with duckdb.connect(str(analyst_path(published_store)), read_only=True) as con:
        tables = {row[0] for row in con.execute("SHOW TABLES").fetchall()}
        undescribed = con.execute(
            "SELECT table_name, column_name FROM data_dictionary "
            "WHERE description IS NULL OR description = ''"
        ).fetchall()
        described = con.execute(
            "SELECT count(*) FROM data_dictionary WHERE column_name IS NOT NULL"
        ).fetchall()[0][0]
        columns = con.execute(
            "SELECT count(*) FROM duckdb_columns() WHERE NOT internal "
            "AND database_name = current_database() AND table_name <> 'data_dictionary'"
        ).fetchall()[0][0]
    assert tables == set(ANALYST_TABLES + LOOKUP_TABLES) | {"data_dictionary", "publish_info"}
    assert undescribed == []
    assert described == columns


def test_dead_letters_reach_analysts_without_their_raw_bytes(published_store):
    with duckdb.connect(str(analyst_path(published_store)), read_only=True) as con:
        columns = {row[0] for row in con.execute("DESCRIBE dead_letters").fetchall()}
        count = con.execute("SELECT count(*) FROM dead_letters").fetchall()[0][0]
    assert {"reason", "error_kind", "source_offset"} <= columns
    assert not {"raw", "message_key"} & columns
    assert count > 0


def test_a_reader_keeps_its_snapshot_across_a_publish_and_new_readers_see_the_next(tmp_path):
    settings = Settings(storage={"db_path": tmp_path / "live.duckdb"})
    with connect(settings.storage.db_path) as con:
        store(con, order("ann", days_ago(5), "10"))
        run_build(con, settings, AS_OF)
        first = publish_analyst_database(con, settings)

        reader = duckdb.connect(str(first.path), read_only=True)
        assert reader.execute("SELECT count(*) FROM customer_profiles").fetchall() == [(1,)]
        inode = os.stat(first.path).st_ino

        store(con, order("bob", days_ago(4), "10"), order("cy", days_ago(3), "10"))
        run_build(con, settings, AS_OF)
        second = publish_analyst_database(con, settings)

    assert second.path == first.path and os.stat(second.path).st_ino != inode  # swapped
    # The open reader still sees its complete snapshot, and can go on querying it.
    assert reader.execute("SELECT count(*) FROM customer_profiles").fetchall() == [(1,)]
    assert reader.execute("SELECT count(*) FROM events").fetchall() == [(1,)]
    reader.close()
    with duckdb.connect(str(second.path), read_only=True) as fresh:
        assert fresh.execute("SELECT count(*) FROM customer_profiles").fetchall() == [(3,)]
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_the_stock_duckdb_cli_reads_it_read_only(published_store):
    # The dev extra installs the stock CLI (duckdb-cli), older than cdp's own DuckDB:
    # the analyst database is written in a storage format it reads.
    cli = shutil.which("duckdb", path=os.path.dirname(sys.executable)) or shutil.which("duckdb")
    assert cli, "the duckdb CLI (pip package duckdb-cli, in the dev extra) is not installed"
    path = str(analyst_path(published_store))
    result = subprocess.run(
        [
            cli,
            "-readonly",
            "-csv",
            "-noheader",
            path,
            "-c",
            "SELECT (SELECT count(*) FROM customer_profiles) || ',' ||"
            " (SELECT count(*) FROM events WHERE payload->>'type' IS NOT NULL)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    with duckdb.connect(str(published_store.storage.db_path), read_only=True) as live:
        events = live.execute("SELECT count(*) FROM events").fetchall()[0][0]
    assert result.stdout.split()[-1].strip('"') == f"400,{events}"  # events: Parquet parts


def _table_digest(con, table: str) -> tuple:
    return con.execute(
        f"SELECT count(*), sum(hash(COLUMNS(*)))::VARCHAR FROM (SELECT * FROM {table})"
    ).fetchall()[0]


def test_later_publishes_update_a_copy_of_the_last_snapshot_and_match_the_live_tables(tmp_path):
    from datetime import timedelta

    from cdp.processing.activation.privacy import forget_customer
    from cdp.processing.segmentation.config import load_segment_config
    from tests.processing.store import event

    settings = Settings(storage={"db_path": tmp_path / "live.duckdb"})
    segments = load_segment_config(settings)
    with connect(settings.storage.db_path) as con:
        store(con, order("ann", days_ago(5), "10"), order("bob", days_ago(4), "10"))
        run_build(con, settings, AS_OF, segments)
        first = publish_analyst_database(con, settings)
        store(
            con,
            order("cy", days_ago(3), "10"),
            event("page_viewed", days_ago(1), user_id="ann", properties={"url": "/"}),
        )
        run_build(con, settings, AS_OF + timedelta(days=1), segments)
        second = publish_analyst_database(con, settings)
        forgot = forget_customer(con, settings, segments, "user:bob").analyst
        run_build(con, settings, AS_OF + timedelta(days=2), segments)
        third = publish_analyst_database(con, settings)
        live = {
            t: _table_digest(con, t) for t in ("events", "profile_history", "customer_profiles")
        }
    assert first.incremental == ()
    assert set(second.incremental) == {"events", "profile_history"}
    # bob's events were deleted: the forget's own publish copied events whole again;
    # history caught up. The next publish is incremental again.
    assert forgot is not None and forgot.incremental == ("profile_history",)
    assert third.incremental == ("events", "profile_history")
    with duckdb.connect(str(third.path), read_only=True) as snapshot:
        copied = {t: _table_digest(snapshot, t) for t in live}
        info = snapshot.execute("SELECT incremental_tables FROM publish_info").fetchall()
    assert copied == live
    assert info == [(["events", "profile_history"],)]


def test_events_reach_analysts_as_parquet_parts_each_publish_adding_only_what_is_new(tmp_path):
    settings = Settings(storage={"db_path": tmp_path / "live.duckdb"})
    with connect(settings.storage.db_path) as con:
        store(con, order("ann", days_ago(5), "10"), order("bob", days_ago(4), "10"))
        first = publish_analyst_database(con, settings)
        store(con, order("cy", days_ago(3), "10"))
        second = publish_analyst_database(con, settings)
        live = _table_digest(con, "events")
    folder = events_folder(second.path)
    with duckdb.connect(str(second.path), read_only=True) as snapshot:
        parts = snapshot.execute("SELECT event_parts FROM publish_info").fetchall()[0][0]
        assert _table_digest(snapshot, "events") == live
        columns = [row[:2] for row in snapshot.execute("DESCRIBE events").fetchall()]
        assert columns == _live_columns(settings)  # names, order and types
    assert first.incremental == ()
    assert "events" in second.incremental
    assert [p.split("/")[0] for p in parts] == ["part-000001", "part-000002"]
    # Any Parquet reader can use the parts: the second holds only cy's order.
    newest = duckdb.sql(f"SELECT user_id FROM read_parquet('{folder / parts[-1]}')").fetchall()
    assert newest == [("cy",)]


def _live_columns(settings: Settings) -> list[tuple]:
    with duckdb.connect(str(settings.storage.db_path), read_only=True) as live:
        return [row[:2] for row in live.execute("DESCRIBE events").fetchall()]


def test_an_event_committed_after_a_snapshot_but_stamped_before_it_reaches_the_next(tmp_path):
    # received_at is the inserting transaction's start; a batch still open when a
    # snapshot is taken commits rows stamped before it. The next publish finds them
    # without rewriting every event.
    from cdp.ingest.validation import RawMessage, validate_batch
    from cdp.storage.event_store import insert_events
    from cdp.storage.transactions import transaction

    settings = Settings(storage={"db_path": tmp_path / "live.duckdb"})
    late = validate_batch(
        [RawMessage(json.dumps(order("dee", days_ago(2), "7")).encode(), "t", 0, 9)]
    )
    with connect(settings.storage.db_path) as con:
        store(con, order("ann", days_ago(5), "10"))
        writer = con.cursor()
        with transaction(writer):
            insert_events(writer, late.events)
            first = publish_analyst_database(con, settings)
            held_by_first = _events_in(first)
        second = publish_analyst_database(con, settings)
        live = _table_digest(con, "events")
    assert held_by_first == 1  # dee's batch was not committed yet
    with duckdb.connect(str(second.path), read_only=True) as snapshot:
        assert _table_digest(snapshot, "events") == live
    assert "events" in second.incremental
    assert live[0] == 2


def _events_in(published) -> int:
    with duckdb.connect(str(published.path), read_only=True) as snapshot:
        return snapshot.execute("SELECT count(*) FROM events").fetchall()[0][0]


def test_forgetting_a_customer_deletes_the_parts_that_held_their_events_at_once(tmp_path):
    from cdp.processing.activation.privacy import forget_customer
    from cdp.processing.segmentation.config import load_segment_config

    settings = Settings(storage={"db_path": tmp_path / "live.duckdb"})
    with connect(settings.storage.db_path) as con:
        store(con, order("ann", days_ago(5), "10"), order("bob", days_ago(4), "10"))
        run_build(con, settings, AS_OF)
        publish_analyst_database(con, settings)
        after = forget_customer(con, settings, load_segment_config(settings), "user:bob").analyst
    folder = events_folder(after.path)
    files = sorted(str(f) for f in folder.rglob("*.parquet"))
    users = duckdb.sql(f"SELECT DISTINCT user_id FROM read_parquet({files})").fetchall()
    assert "events" not in after.incremental
    assert users == [("ann",)]
    assert [p.name for p in folder.iterdir()] == ["part-000002"]


def test_a_failed_publish_leaves_the_snapshot_in_place_readable_and_no_parts_of_its_own(
    tmp_path, monkeypatch
):
    from cdp.storage import analyst

    settings = Settings(storage={"db_path": tmp_path / "live.duckdb"})
    with connect(settings.storage.db_path) as con:
        store(con, order("ann", days_ago(5), "10"))
        first = publish_analyst_database(con, settings)
        store(con, order("bob", days_ago(4), "10"))

        def fail(con, table):
            raise RuntimeError("disk full")

        # The worst case: a snapshot that cannot be the base (say, an older schema), so
        # every event is written to a new part before the failure.
        monkeypatch.setattr(analyst, "_previous_snapshot", lambda path, version: None)
        monkeypatch.setattr(analyst, "_copy_whole", fail)
        with pytest.raises(RuntimeError, match="disk full"):
            publish_analyst_database(con, settings)
    assert _events_in(first) == 1
    assert [p.name for p in events_folder(first.path).iterdir()] == ["part-000001"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
