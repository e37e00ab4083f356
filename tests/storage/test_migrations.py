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
