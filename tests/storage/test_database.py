"""Opening the live database with the memory and spill settings of [storage]."""

from __future__ import annotations

import duckdb
import pytest

from cdp.settings import StorageSettings
from cdp.storage.database import connect_live, raised_for_build


def test_the_live_database_gets_the_configured_memory_limit_and_spill_folder(tmp_path):
    storage = StorageSettings(
        db_path=tmp_path / "live.duckdb", memory_limit="300MB", temp_directory=str(tmp_path / "s")
    )
    with connect_live(storage) as con:
        limit, spill = con.execute(
            "SELECT current_setting('memory_limit'), current_setting('temp_directory')"
        ).fetchone()
    assert limit == "286.1 MiB"  # 300 MB as DuckDB prints it
    assert spill == str(tmp_path / "s")


def test_a_share_of_the_machine_s_memory_is_a_memory_limit(tmp_path):
    with connect_live(StorageSettings(db_path=tmp_path / "live.duckdb")) as con:
        limit = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    with connect_live(StorageSettings(db_path=tmp_path / "live.duckdb", memory_limit="25%")) as con:
        quarter = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    assert (
        abs(_bytes(limit) / _bytes(quarter) - 1.6) < 0.05
    )  # the default, 40%, over 25% (printed to 0.1 GiB)


def _bytes(size: str) -> float:
    """DuckDB's printed size ("11.7 GiB") in bytes."""
    number, unit = size.split()
    return float(number) * {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}[unit]


def test_a_build_s_memory_limit_and_threads_are_raised_for_its_duration_then_set_back(
    tmp_path,
):
    storage = StorageSettings(db_path=tmp_path / "live.duckdb")
    with duckdb.connect() as default:
        per_core = default.execute("SELECT current_setting('threads')").fetchone()[0]
    with connect_live(storage, memory_limit="200MB", threads=1) as con:
        before = con.execute("SELECT current_setting('threads')").fetchone()[0]
        with raised_for_build(con.cursor(), "400MB"):
            during = con.execute(
                "SELECT current_setting('memory_limit'), current_setting('threads')"
            ).fetchone()
        after = con.execute(
            "SELECT current_setting('memory_limit'), current_setting('threads')"
        ).fetchone()
    assert before == 1
    assert during == ("381.4 MiB", per_core)
    assert abs(_bytes(after[0]) - 200e6) < 2**20  # back (DuckDB prints it to 0.1 MiB)
    assert after[1] == 1


def test_a_build_that_fails_still_gets_its_settings_set_back(tmp_path):
    storage = StorageSettings(db_path=tmp_path / "live.duckdb")
    with connect_live(storage, memory_limit="200MB", threads=1) as con:
        with (
            pytest.raises(ValueError, match="the build failed"),
            raised_for_build(con.cursor(), "400MB"),
        ):
            raise ValueError("the build failed")
        limit, threads = con.execute(
            "SELECT current_setting('memory_limit'), current_setting('threads')"
        ).fetchone()
    assert abs(_bytes(limit) - 200e6) < 2**20
    assert threads == 1


def test_a_setting_that_cannot_be_set_back_is_logged_and_the_build_s_own_error_kept(
    tmp_path, caplog
):
    storage = StorageSettings(db_path=tmp_path / "live.duckdb")
    with connect_live(storage, memory_limit="200MB", threads=1) as con:
        cursor = con.cursor()
        with (
            pytest.raises(duckdb.CatalogException, match="no_such_table"),
            raised_for_build(cursor, "400MB"),
        ):
            cursor.execute("BEGIN TRANSACTION")
            cursor.execute("SELECT * FROM no_such_table")  # aborts the transaction
        cursor.execute("ROLLBACK")
    assert "could not set DuckDB's threads back to 1" in caplog.text
    assert "could not set DuckDB's memory_limit back" in caplog.text
