import duckdb
import pytest

from cdp.errors import DatabaseLocked, SchemaVersionError, TransientError
from cdp.storage.database import connect
from cdp.storage.migrations import available_migrations, current_version, migrate


def test_migrations_apply_once_and_rerunning_is_a_no_op(tmp_path):
    path = tmp_path / "db.duckdb"
    with connect(path) as con:
        assert current_version(con) == available_migrations()[-1].version
        assert migrate(con) == []
    with connect(path) as con:
        tables = {
            row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
        }
    assert {"events", "dead_letters", "duplicate_events", "consumer_offsets"} <= tables


def test_database_from_a_newer_cdp_is_refused_with_a_clear_error(tmp_path):
    path = tmp_path / "db.duckdb"
    with connect(path) as con:
        con.execute("INSERT INTO schema_migrations (version, name) VALUES (9999, 'future')")
    with pytest.raises(SchemaVersionError, match="schema version 9999, written by a newer cdp"):
        connect(path)


def test_second_writer_gets_a_clear_lock_error(tmp_path):
    path = tmp_path / "db.duckdb"
    with connect(path):
        # DuckDB's file lock is per process; a second process is what a user would hit.
        import subprocess
        import sys

        code = f"from cdp.storage.database import connect\nconnect({str(path)!r})\n"
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0
    assert DatabaseLocked.__name__ in result.stderr and issubclass(DatabaseLocked, TransientError)
    assert "open for writing in another process" in result.stderr


def test_failed_migration_leaves_no_partial_schema(tmp_path, monkeypatch):
    from cdp.storage import migrations

    broken = migrations.Migration(1, "broken", "CREATE TABLE a (x INT); CREATE TABLE oops (;")
    monkeypatch.setattr(migrations, "available_migrations", lambda: [broken])
    con = duckdb.connect(str(tmp_path / "db.duckdb"))
    with pytest.raises(duckdb.Error):
        migrations.migrate(con)
    tables = {row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert "a" not in tables
    assert current_version(con) == 0


def test_events_lose_their_key_in_schema_10_keeping_rows_order_comments_and_dedup(
    tmp_path, monkeypatch
):
    from cdp.storage import migrations
    from cdp.storage.event_store import write_batch
    from tests.storage.test_event_store import _batch, _viewed

    path = tmp_path / "db.duckdb"
    every = migrations.available_migrations()
    monkeypatch.setattr(migrations, "available_migrations", lambda: every[:9])
    with connect(path) as con:  # a database written by the cdp before schema 10
        batch = _batch([_viewed(f"e{n}", n) for n in (3, 1, 2)])
        con.register("old", batch.events)
        con.execute(
            "INSERT INTO events (event_id, type, family, occurred_at, currency, source_topic,"
            " source_partition, source_offset, payload) SELECT event_id, type, family,"
            " occurred_at, 'USD', source_topic, source_partition, source_offset, payload FROM old"
        )
        # Three row groups more, which a parallel copy would reorder.
        con.execute(
            "INSERT INTO events (event_id, type, family, occurred_at, currency, source_topic,"
            " source_partition, source_offset, payload) SELECT 'r' || i, 'page_viewed',"
            " 'browse', TIMESTAMPTZ '2026-01-01 00:00:00+00', 'USD', 'r', 0, i + 3, '{}'"
            " FROM range(3 * 122880) AS t(i)"
        )
    monkeypatch.setattr(migrations, "available_migrations", lambda: every)
    with connect(path) as con:
        assert current_version(con) == every[-1].version
        first = con.execute("SELECT event_id FROM events WHERE rowid < 3 ORDER BY rowid")
        assert first.fetchall() == [("e3",), ("e1",), ("e2",)]
        moved = con.execute(
            "SELECT count(*) FROM events WHERE rowid >= 3 AND source_offset <> rowid"
        )
        assert moved.fetchall() == [(0,)]
        keys = con.execute(
            "SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'events'"
            " AND constraint_type = 'PRIMARY KEY'"
        )
        assert keys.fetchall() == [(0,)]
        [(comment,)] = con.execute(
            "SELECT comment FROM duckdb_columns() WHERE table_name = 'events'"
            " AND column_name = 'payload'"
        ).fetchall()
        assert comment == "The full event as received (JSON)."
        con.execute("CHECKPOINT")
        payload_storage = con.execute(
            "SELECT DISTINCT compression FROM pragma_storage_info('events')"
            " WHERE column_name = 'payload' AND segment_type <> 'VALIDITY'"
        ).fetchall()
        assert payload_storage == [("ZSTD",)]
        # The window is filled from the events stored before: a retry is still found.
        again = _batch([_viewed("e1", 1)], start=10)
        result = write_batch(con, again.events, again.dead_letters)
        assert (result.stored, result.duplicates) == (0, 1)


def test_prediction_columns_describe_the_chosen_model_not_bg_nbd_alone(tmp_path):
    with connect(tmp_path / "db.duckdb") as con:
        described = con.execute(
            "SELECT column_name, comment FROM duckdb_columns() WHERE table_name ="
            " 'customer_profiles' AND column_name IN ('predicted_clv', 'p_alive',"
            " 'expected_purchases')"
        ).fetchall()
    assert len(described) == 3
    for column, comment in described:
        assert "chosen by the build" in comment and "BG/NBD" not in comment, column
