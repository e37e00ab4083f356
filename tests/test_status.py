"""``cdp status`` reading the live database, or the snapshot while a writer holds it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cdp.errors import StorageError
from cdp.settings import Settings, StorageSettings
from cdp.status import gather_status
from cdp.storage.database import connect


def _settings(db: Path) -> Settings:
    return Settings(storage=StorageSettings(db_path=db))


def test_a_corrupt_live_database_is_an_error_not_a_silent_fall_back_to_the_snapshot(tmp_path):
    live = tmp_path / "cdp.duckdb"
    settings = _settings(live)
    with connect(tmp_path / "cdp.analyst.duckdb"):
        pass  # a snapshot from earlier days
    live.write_bytes(b"not a duckdb file" * 1000)
    with pytest.raises(StorageError, match="cannot open database"):
        gather_status(settings)


def test_a_live_database_held_by_a_writer_falls_back_to_the_snapshot(tmp_path):
    live = tmp_path / "cdp.duckdb"
    settings = _settings(live)
    with connect(tmp_path / "cdp.analyst.duckdb"):
        pass
    # DuckDB's lock is per process: another process must hold the file for writing.
    hold = "import sys, duckdb; con = duckdb.connect(sys.argv[1]); print('ok', flush=True); "
    hold += "sys.stdin.read()"
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(live)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ok"
        status = gather_status(settings)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert status.source.startswith("analyst snapshot")
