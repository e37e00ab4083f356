"""Opening the live database with the memory and spill settings of [storage]."""

from __future__ import annotations

import duckdb
import pytest

from cdp.settings import StorageSettings
from cdp.storage.database import connect_live, every_thread, raised_memory_limit


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


def test_a_build_s_memory_limit_is_raised_for_its_duration_then_set_back_exactly(tmp_path):
    storage = StorageSettings(db_path=tmp_path / "live.duckdb")
    with connect_live(storage, memory_limit="2GB") as con:
        opened = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
        for _ in range(3):  # read back, DuckDB's rounded 1.8 GiB lowered it a step a build
            with raised_memory_limit(con.cursor(), "4GB", back_to="2GB"):
                during = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
            after = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
            assert during == "3.7 GiB"
            assert after == opened == "1.8 GiB"


def test_a_build_that_fails_still_gets_its_memory_limit_set_back(tmp_path):
    storage = StorageSettings(db_path=tmp_path / "live.duckdb")
    with connect_live(storage, memory_limit="200MB") as con:
        with (
            pytest.raises(ValueError, match="the build failed"),
            raised_memory_limit(con.cursor(), "400MB", back_to="200MB"),
        ):
            raise ValueError("the build failed")
        limit = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    assert abs(_bytes(limit) - 200e6) < 2**20


def test_threads_are_set_back_even_from_an_aborted_transaction(tmp_path):
    with duckdb.connect() as default:
        per_core = default.execute("SELECT current_setting('threads')").fetchone()[0]
    configured = per_core + 1  # not DuckDB's default, on any machine
    storage = StorageSettings(db_path=tmp_path / "live.duckdb")
    with connect_live(storage, threads=configured) as con:
        cursor = con.cursor()
        with (
            pytest.raises(duckdb.CatalogException, match="no_such_table"),
            every_thread(cursor),
        ):
            cursor.execute("BEGIN TRANSACTION")
            during = cursor.execute("SELECT current_setting('threads')").fetchone()[0]
            cursor.execute("SELECT * FROM no_such_table")  # aborts the transaction
        cursor.execute("ROLLBACK")
        after = con.execute("SELECT current_setting('threads')").fetchone()[0]
    assert during == per_core
    assert after == configured


def test_a_setting_that_cannot_be_set_back_is_logged_and_the_work_s_own_error_kept(
    tmp_path, caplog
):
    storage = StorageSettings(db_path=tmp_path / "live.duckdb")
    with (
        connect_live(storage, memory_limit="200MB") as con,
        pytest.raises(ValueError, match="the build failed"),
        raised_memory_limit(con.cursor(), "400MB", back_to="no such size"),
    ):
        raise ValueError("the build failed")
    assert "could not set DuckDB's memory_limit back to no such size" in caplog.text
