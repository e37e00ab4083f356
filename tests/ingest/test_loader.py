import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import duckdb
import pytest

from cdp.ingest.generator import generate_store
from cdp.ingest.loader import load_file
from cdp.ingest.validation import ValidationLimits
from tests.helpers import offsets_accounted, validator_process_of


def test_every_line_lands_in_exactly_one_table(tmp_path, memory_db):
    source = tmp_path / "s.jsonl"
    report = generate_store(source, customers=200, seed=5, end=date(2026, 11, 1))
    stats = load_file(memory_db, source, limits=ValidationLimits())
    lines = sum(1 for line in source.read_bytes().splitlines() if line.strip())
    assert stats.consumed == lines == report.events + report.resent
    assert stats.dead_lettered == report.malformed
    assert stats.duplicates == report.resent
    [(_, _, rows, distinct)] = offsets_accounted(memory_db)
    assert rows == distinct == lines


def test_loading_the_same_file_twice_stores_nothing_twice(tmp_path, memory_db):
    source = tmp_path / "s.jsonl"
    generate_store(source, customers=50, seed=5, end=date(2026, 11, 1))
    first = load_file(memory_db, source, limits=ValidationLimits())
    second = load_file(memory_db, source, limits=ValidationLimits())
    assert first.stored > 0
    assert (second.stored, second.duplicates) == (0, 0)
    assert memory_db.execute("SELECT count(*) FROM events").fetchone()[0] == first.stored


# -- the validator process dies ---------------------------------------------------------


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the validator through /proc")
def test_load_whose_validator_process_is_killed_fails_in_one_line_and_a_rerun_is_exact(
    tmp_path,
):
    source = tmp_path / "store.jsonl"
    generate_store(source, customers=12_000, seed=7, end=date(2026, 11, 1))  # ~5 batches
    db = tmp_path / "cdp.duckdb"
    wal = db.with_name(db.name + ".wal")
    command = [sys.executable, "-m", "cdp", "load", str(source), "--db", str(db)]
    load = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Mid-load: once the first batch is committed (its ~20 MB reach the WAL), with
        # several batches still to validate.
        deadline = time.monotonic() + 60
        while not (wal.exists() and wal.stat().st_size > 10_000_000):
            assert load.poll() is None, load.communicate()
            assert time.monotonic() < deadline, "the first batch was never written"
            time.sleep(0.005)
        validator = validator_process_of(load.pid)
        assert validator is not None
        os.kill(validator, signal.SIGKILL)
        _, stderr = load.communicate(timeout=60)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()

    assert "Traceback" not in stderr, stderr
    assert load.returncode != 0, stderr
    assert stderr.startswith("error: "), stderr
    assert "validator process died" in stderr, stderr
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    with duckdb.connect(str(db), read_only=True) as con:
        accounted = offsets_accounted(con)
    lines = sum(1 for line in source.read_bytes().splitlines() if line.strip())
    assert accounted == [(f"file:{source.resolve()}", 0, lines, lines)]
