"""A full disk under the database: `cdp load`, `cdp ingest` and `cdp build` say so in
one line (exit 1, no traceback), write nothing by halves, and a run after space is
freed is exact. Under the file destinations, `cdp export` records each delivery that
did not fit as a disk error naming its folder.

The disk is a small tmpfs mounted for the test (root only: skipped elsewhere), filled
with a filler file; the commands run as real processes, as a user runs them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import duckdb
import pytest

from cdp.errors import DiskError
from cdp.ingest.generator import generate_store
from cdp.storage.database import connect
from cdp.storage.disk import disk_error, storage_errors
from cdp.storage.transactions import transaction
from tests.helpers import offsets_accounted

DISK_MB = 20


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of ``DISK_MB`` MB, unmounted afterwards whatever happens."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], capture_output=True)


def fill(disk: Path, leave_bytes: int) -> Path:
    """Fill ``disk`` but ``leave_bytes``; return the filler file (delete it to free space)."""
    stats = os.statvfs(disk)
    size = stats.f_bavail * stats.f_frsize - leave_bytes
    filler = disk / f"filler-{uuid.uuid4().hex[:6]}"
    with filler.open("wb") as handle:
        if size > 0:
            os.posix_fallocate(handle.fileno(), 0, size)
    return filler


@pytest.fixture(scope="module")
def store_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated store, written off the small disk."""
    path = tmp_path_factory.mktemp("store") / "store.jsonl"
    generate_store(path, customers=300, seed=7, end=date(2026, 11, 1))
    return path


def cdp(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cdp", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


def assert_disk_full_error(result: subprocess.CompletedProcess, names: str) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    assert names in result.stderr, result.stderr
    assert "disk full" in result.stderr, result.stderr
    assert "No space left on device" in result.stderr, result.stderr


def lines_in(path: Path) -> int:
    return sum(1 for line in path.read_bytes().splitlines() if line.strip())


# -- cdp load --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("existing", "room"),
    [
        # Not even room to create the file: duckdb.connect() fails.
        pytest.param(False, 0, id="new database, no room"),
        # Room to create it, not to migrate it.
        pytest.param(False, 64 * 1024, id="new database, room for a little"),
        # A migrated database, no room for the events.
        pytest.param(True, 128 * 1024, id="existing database"),
    ],
)
def test_load_on_a_full_disk_fails_in_one_line_and_a_rerun_stores_each_line_once(
    small_disk, store_file, tmp_path, existing, room
):
    db = small_disk / "cdp.duckdb"
    if existing:
        connect(db).close()
    filler = fill(small_disk, room)

    failed = cdp("load", str(store_file), "--db", str(db), cwd=tmp_path)

    assert_disk_full_error(failed, str(db))
    filler.unlink()
    again = cdp("load", str(store_file), "--db", str(db), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    with duckdb.connect(str(db), read_only=True) as con:
        accounted = offsets_accounted(con)
    lines = lines_in(store_file)
    assert accounted == [(f"file:{store_file.resolve()}", 0, lines, lines)]


# -- cdp build -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("room", "status"),
    [
        # No room for the build's tables: the build fails and writes nothing.
        pytest.param(64 * 1024, "failed", id="while building"),
        # Room for the build, not for the analyst copy: the build's tables are live,
        # the analyst database is not written.
        pytest.param(1536 * 1024, "publish_failed", id="while publishing the analyst copy"),
    ],
)
def test_build_on_a_full_disk_fails_in_one_line_says_so_in_builds_and_a_rerun_succeeds(
    small_disk, store_file, tmp_path, room, status
):
    db = small_disk / "cdp.duckdb"
    loaded = cdp("load", str(store_file), "--db", str(db), cwd=tmp_path)
    assert loaded.returncode == 0, loaded.stderr
    filler = fill(small_disk, room)

    failed = cdp("build", "--db", str(db), cwd=tmp_path)

    # The file that did not fit, as the user knows it: the live or the analyst database.
    did_not_fit = db if status == "failed" else small_disk / "cdp.analyst.duckdb"
    assert_disk_full_error(failed, f"error: {did_not_fit}: disk full (")
    with duckdb.connect(str(db), read_only=True) as con:
        builds = con.execute("SELECT status, message FROM builds").fetchall()
        profiles = con.execute("SELECT count(*) FROM customer_profiles").fetchall()[0][0]
    assert [row[0] for row in builds] == [status]
    assert "disk full" in builds[0][1]
    assert (profiles > 0) == (status == "publish_failed")  # "failed" wrote nothing
    assert not (small_disk / "cdp.analyst.duckdb").exists()
    hidden = sorted(p.name for p in small_disk.iterdir() if p.name.startswith("."))
    assert hidden == []  # no staging copy of the analyst database, no half report

    filler.unlink()
    again = cdp("build", "--db", str(db), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    with duckdb.connect(str(db), read_only=True) as con:
        statuses = con.execute("SELECT status FROM builds ORDER BY build_id").fetchall()
    assert statuses == [(status,), ("succeeded",)]
    assert (small_disk / "cdp.analyst.duckdb").exists()
    assert (small_disk / "cdp.report.html").exists()


# -- cdp ingest ------------------------------------------------------------------------


@pytest.mark.kafka
@pytest.mark.slow
def test_ingest_on_a_full_disk_fails_in_one_line_and_a_rerun_stores_everything_once(
    small_disk, store_file, tmp_path, isolated_config, kafka_settings
):
    from cdp.ingest.producer import produce_file
    from cdp.ingest.topics import create_topics

    create_topics(kafka_settings)
    sent = produce_file(kafka_settings, store_file).sent
    db = small_disk / "cdp.duckdb"
    connect(db).close()
    filler = fill(small_disk, 64 * 1024)
    args = ("--config", str(isolated_config), "ingest", "--until-idle", "--db", str(db))

    failed = cdp(*args, cwd=tmp_path)

    printed = "\n".join(line for line in failed.stderr.splitlines() if not line.startswith("{"))
    assert "Traceback" not in failed.stderr, failed.stderr
    assert failed.returncode == 1, failed.stderr
    assert printed.startswith("error: "), failed.stderr
    assert str(db) in printed and "disk full" in printed, failed.stderr
    filler.unlink()
    again = cdp(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    with duckdb.connect(str(db), read_only=True) as con:
        accounted = offsets_accounted(con)
    assert all(rows == distinct for _, _, rows, distinct in accounted), accounted
    assert sum(rows for _, _, rows, _ in accounted) == sent


# -- cdp export ------------------------------------------------------------------------


def test_export_to_a_full_disk_records_each_file_delivery_as_disk_full_and_leaves_nothing_half(
    small_disk, published_store, tmp_path
):
    # The live database off the small disk (a copy: the store is shared); the file
    # destinations (files, ad audiences) on it.
    db = tmp_path / "cdp.duckdb"
    shutil.copyfile(published_store.storage.db_path, db)
    out = small_disk / "out"
    args = ("export", "--db", str(db), "--out", str(out))
    filler = fill(small_disk, 0)

    failed = cdp(*args, cwd=tmp_path)

    assert "Traceback" not in failed.stderr, failed.stderr
    assert failed.returncode == 1, failed.stderr  # what a failed delivery exits with
    with duckdb.connect(str(db), read_only=True) as con:
        runs = con.execute(
            "SELECT destination, segment, as_of, status, message FROM export_runs"
        ).fetchall()
    assert runs and {status for *_, status, _ in runs} == {"failed"}
    for destination, segment, as_of, _, message in runs:
        root = out / ("segments" if destination == "files" else "audiences")
        folder = root / segment / as_of.isoformat()
        assert message.startswith(f"DiskError: {folder}: disk full (No space left on device)")
        assert message in failed.stdout
    assert "Errno" not in failed.stdout and "OSError" not in failed.stdout, failed.stdout
    # No staging folder, no file of a delivery that did not fit.
    assert [p for p in out.rglob("*") if p.is_file() or p.name.startswith(".")] == []

    filler.unlink()
    again = cdp(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert len(list(out.rglob("manifest.json"))) == len(runs)


# -- the report ----------------------------------------------------------------------


def test_a_report_that_does_not_fit_is_a_disk_error_and_leaves_no_half_file(
    small_disk, published_store
):
    from cdp.processing.report.html import write_report
    from cdp.storage.paths import analyst_path, report_path

    out = small_disk / report_path(published_store).name
    filler = fill(small_disk, 0)
    with pytest.raises(DiskError, match="disk full") as raised:
        write_report(analyst_path(published_store), out)
    assert str(out) in str(raised.value)
    assert list(small_disk.iterdir()) == [filler]


# -- which errors are disk errors ------------------------------------------------------

# What DuckDB 2.0 raised in the tests above (and, for EIO and EDQUOT, the same words).
_FULL = "No space left on device"
_INVALIDATED = (
    "FATAL Error: Failed: database has been invalidated because of a previous fatal "
    "error. The database must be restarted prior to being used again.\nOriginal error: "
    f'"Failed to create checkpoint because of error: Could not write file "/d/x.duckdb": {_FULL}"'
)
_DETACH = (
    "IO Error: Detached database 'analyst_snapshot', but CHECKPOINT during DETACH failed. "
    '\nCheckpoint failed for database "analyst_snapshot". The database has been '
    f'invalidated. Original error: Could not write file "/d/x.duckdb": {_FULL}'
)


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (duckdb.IOException(f'IO Error: Could not write file "/d/x.duckdb": {_FULL}'), "disk full"),
        (
            duckdb.TransactionException(
                "TransactionContext Error: Failed to commit: "
                f'Could not write file "/d/x.duckdb.wal": {_FULL}'
            ),
            "disk full",
        ),
        (duckdb.FatalException(_INVALIDATED), "disk full"),
        (duckdb.IOException(_DETACH), "disk full"),
        (
            duckdb.IOException(
                'IO Error: Could not read from file "/d/x.duckdb": Input/output error'
            ),
            "I/O error",
        ),
        (
            duckdb.IOException(
                'IO Error: Could not write file "/d/x.duckdb.wal": Disk quota exceeded'
            ),
            "disk quota exceeded",
        ),
        (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/d/x.duckdb"), "disk full"),
        (OSError(errno.EIO, os.strerror(errno.EIO)), "I/O error"),
        (OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)), "disk quota exceeded"),
    ],
)
def test_disk_and_io_errors_become_disk_errors_naming_the_database(exc, kind):
    error = disk_error(exc, Path("/d/x.duckdb"))
    assert isinstance(error, DiskError)
    assert str(error).startswith(f"/d/x.duckdb: {kind} (")
    if isinstance(exc, duckdb.Error):
        assert "could not " in str(error) and '"' not in str(error)
    # Without a path, the file DuckDB names (its WAL is the database's).
    if isinstance(exc, duckdb.Error):
        assert str(disk_error(exc)).startswith(f"/d/x.duckdb: {kind} (")


@pytest.mark.parametrize(
    "exc",
    [
        # The words in data or SQL are not a full disk.
        duckdb.ConversionException(
            "Conversion Error: Could not convert string 'No space left on device' to INT32"
        ),
        duckdb.BinderException('Binder Error: Referenced column "No space left on device"'),
        duckdb.ConstraintException("Constraint Error: Duplicate key"),
        duckdb.IOException('IO Error: Could not set lock on file "/d/x.duckdb"'),
        OSError(errno.EACCES, os.strerror(errno.EACCES), "/d/x.duckdb"),
        FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), "/d/x.duckdb"),
        ValueError("No space left on device"),
    ],
)
def test_other_errors_are_left_as_they_are(exc):
    assert disk_error(exc) is None
    with pytest.raises(type(exc)), storage_errors(Path("/d/x.duckdb")):
        raise exc


def test_an_os_error_is_worded_with_the_systems_words_whoever_raised_it():
    # pyarrow's, writing an export file: strerror wraps the system's words.
    pyarrow = OSError(
        errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device"
    )
    assert str(disk_error(pyarrow, Path("/out/seg/2026-06-30"))) == (
        "/out/seg/2026-06-30: disk full (No space left on device); free some space and run it again"
    )


def test_the_outermost_storage_layer_names_the_file_the_user_knows():
    original = duckdb.TransactionException(
        'TransactionContext Error: Failed to commit: Could not write file "/d/.a.duckdb.tmp-1.wal"'
        ": No space left on device"
    )
    with pytest.raises(DiskError) as raised, storage_errors(Path("/d/a.duckdb")), storage_errors():
        raise original
    assert str(raised.value).startswith("/d/a.duckdb: disk full (could not write /d/.a.duckdb")
    assert raised.value.__cause__ is original


def test_a_transaction_on_a_full_disk_raises_a_disk_error_and_the_database_stays_usable(
    small_disk,
):
    db = small_disk / "cdp.duckdb"
    with connect(db) as con:
        con.execute("CREATE TABLE t (a VARCHAR)")
        con.execute("CHECKPOINT")
        filler = fill(small_disk, 64 * 1024)
        with pytest.raises(DiskError, match=f"^{re.escape(str(db))}: disk full"), transaction(con):
            con.execute("INSERT INTO t SELECT repeat('x', 100) || i FROM range(100000) r(i)")
        assert con.execute("SELECT count(*) FROM t").fetchall() == [(0,)]
        filler.unlink()
        with transaction(con):
            con.execute("INSERT INTO t VALUES ('a')")
    with contextlib.closing(duckdb.connect(str(db), read_only=True)) as con:
        assert con.execute("SELECT count(*) FROM t").fetchall() == [(1,)]
