"""`cdp build` and `cdp export` as real processes killed with kill -9, then run again:
what the next run finds and what it leaves.

A killed build leaves its ``builds`` row unfinished and, killed while publishing, a
staging copy of the analyst snapshot; a killed export leaves its ``export_runs`` rows
``running``, hidden staging folders of member files, and a webhook batch the receiver
took but cdp never heard acknowledged. The next run must record the first, delete
the second, and send the third again under the key it had.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import duckdb
import pytest

from cdp.ingest.generator import generate_store
from cdp.ingest.loader import load_file
from cdp.ingest.validation import ValidationLimits
from cdp.processing.jobs.pipeline import build_and_publish
from cdp.processing.segmentation.config import load_segment_config
from cdp.settings import load_settings
from cdp.storage.database import connect
from cdp.storage.paths import analyst_path, events_folder
from tests.processing.webhook_server import webhook_receiver

pytestmark = pytest.mark.slow

FILE_SEGMENTS = 6


def _store(folder: Path, segments: str = "") -> Path:
    """A generated store of 400 customers, loaded, built and published, as the
    commands see it: the path of its config file."""
    config = folder / "cdp.toml"
    segments_file = folder / "segments.toml"
    text = f'[storage]\ndb_path = "{folder / "store.duckdb"}"\n'
    text += f'[export]\nout_dir = "{folder / "out"}"\n'
    if segments:
        segments_file.write_text(segments)
        text += f'[segments]\nfile = "{segments_file}"\n'
    config.write_text(text)
    settings = load_settings(config)
    generate_store(folder / "store.jsonl", customers=400, seed=11, end=date(2026, 11, 1))
    with connect(settings.storage.db_path) as con:
        load_file(
            con, folder / "store.jsonl", limits=ValidationLimits.from_settings(settings.ingest)
        )
        build_and_publish(con, settings, load_segment_config(settings))
    (folder / "store.jsonl").unlink()
    return config


def _start(config: Path, *command: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cdp", "--config", str(config), *command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _kill_when(process: subprocess.Popen, seen: Callable[[], bool], timeout_s: float = 60) -> None:
    """SIGKILL ``process`` as soon as ``seen()`` (polled every half millisecond)."""
    deadline = time.monotonic() + timeout_s
    try:
        while not seen():
            assert process.poll() is None, process.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the moment to kill never came"
            time.sleep(0.0005)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


def _run(config: Path, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cdp", "--config", str(config), *command],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _build_row_in_wal(wal: Path) -> Callable[[], bool]:
    """Whether the WAL holds a build's 'running' row, and has for a few milliseconds
    (the commit is one buffered write: its end follows the row within microseconds)."""
    first_seen: list[float] = []

    def seen() -> bool:
        if not first_seen:
            try:
                if b"running" in wal.read_bytes():
                    first_seen.append(time.monotonic())
            except FileNotFoundError:
                pass
            return False
        return time.monotonic() - first_seen[0] > 0.005

    return seen


def _hidden(folder: Path) -> list[Path]:
    """Every hidden file or folder under ``folder``."""
    return sorted(p for p in folder.rglob(".*") if p.is_file() or p.is_dir())


def test_kill_9_during_a_build_and_during_its_publish_then_the_next_build(tmp_path):
    config = _store(tmp_path)
    settings = load_settings(config)
    db = settings.storage.db_path
    snapshot = analyst_path(settings)

    # Killed while computing: right after its row was written to the WAL. Not as soon
    # as the WAL file appears: on a loaded machine a kill between the file's creation
    # and the end of the commit's write loses the row (the test saw it, rarely).
    computing = _start(config, "build")
    _kill_when(computing, _build_row_in_wal(db.with_name(db.name + ".wal")))
    # Killed while publishing: as soon as its staging copy of the snapshot appears.
    publishing = _start(config, "build")
    _kill_when(publishing, lambda: any(tmp_path.glob(f".{snapshot.name}.tmp-*")))
    assert any(tmp_path.glob(f".{snapshot.name}.tmp-*"))  # left behind, for the next build

    result = _run(config, "build")
    assert result.returncode == 0, result.stderr[-3000:]

    with duckdb.connect(str(db), read_only=True) as con:
        builds = con.execute(
            "SELECT status, finished_at IS NOT NULL, message FROM builds ORDER BY build_id"
        ).fetchall()
    assert [status for status, _, _ in builds] == [
        "succeeded",
        "interrupted",
        "publish_failed",
        "succeeded",
    ]
    assert all(finished for _, finished, _ in builds)
    assert builds[1][2].startswith("interrupted:")
    assert "analyst database not published: interrupted" in builds[2][2]
    assert _hidden(tmp_path) == []
    with duckdb.connect(str(snapshot), read_only=True) as analyst:
        named = analyst.execute("SELECT event_parts FROM publish_info").fetchall()[0][0]
        assert analyst.execute("SELECT count(*) FROM customer_profiles").fetchall() == [(400,)]
    parts = {p.name for p in events_folder(snapshot).iterdir()}
    assert parts == {name.split("/")[0] for name in named}


def _segments(url: str) -> str:
    # Several segments to files, so that a kill at the moment a staging folder appears
    # lands inside one of them; the buyers to a webhook, 25 changes a batch.
    text = f"""
[destinations.files]
type = "files"
path = "segments"

[destinations.hook]
type = "webhook"
url = "{url}"
batch_size = 25
max_attempts = 2
backoff_s = 0.01
timeout_s = 60
"""
    for i in range(FILE_SEGMENTS):
        text += f"""
[[segments]]
name = "buyers_{i}"
rule = "orders >= 1"
destinations = ["files"]
consent = "none"
traits = ["orders", "net_revenue"]
"""
    return (
        text
        + """
[[segments]]
name = "buyers"
rule = "orders >= 1"
destinations = ["hook"]
consent = "none"
"""
    )


def test_kill_9_during_exports_then_a_rerun_sends_each_change_under_one_key(tmp_path):
    with webhook_receiver() as receiver:
        config = _store(tmp_path, _segments(receiver.url))
        settings = load_settings(config)
        out = settings.export.out_dir

        # Killed while writing a file destination's folder (again, should the kill
        # land only after the folder was renamed into place).
        for _ in range(3):
            files = _start(config, "export", "--destination", "files")
            _kill_when(files, lambda: bool(_hidden(out)))
            if left_by_files := _hidden(out):
                break
        assert left_by_files, "every kill landed after the folder was in place"

        # Killed while the receiver holds the second batch: it has taken it, cdp has
        # not heard so, and the staging folders from before are still there.
        receiver.script = [200, "stall"]
        hook = _start(config, "export", "--destination", "hook")
        _kill_when(hook, lambda: len(receiver.accepted) == 2)
        receiver.release.set()
        assert not any(p.exists() for p in left_by_files)  # the export's start removed them

        result = _run(config, "export")
        assert result.returncode == 0, result.stdout + result.stderr[-3000:]

    with duckdb.connect(str(settings.storage.db_path), read_only=True) as con:
        runs = con.execute(
            "SELECT destination, status, count(*), bool_and(finished_at IS NOT NULL) "
            "FROM export_runs GROUP BY ALL ORDER BY ALL"
        ).fetchall()
        buyers = con.execute("SELECT count(*) FROM customer_profiles WHERE orders >= 1").fetchall()[
            0
        ][0]
    # The hook's changes: every buyer entered, each under one key, and the batch that
    # was taken but never acknowledged came again under the key it had.
    keys = receiver.keys_by_change()
    assert len(keys) == buyers
    assert [change for change, k in keys.items() if len(k) > 1] == []
    assert len(receiver.keys) > len(set(receiver.keys))
    assert _hidden(out) == []
    statuses = {(destination, status) for destination, status, _, _ in runs}
    assert statuses == {
        ("files", "interrupted"),
        ("files", "succeeded"),
        ("hook", "interrupted"),
        ("hook", "succeeded"),
    }
    assert all(finished for *_, finished in runs)
    assert len(list((out / "segments").glob("buyers_*/*/manifest.json"))) == FILE_SEGMENTS
