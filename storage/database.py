"""Opening the DuckDB database, and transactions as context managers.

DuckDB lets one process open a file read-write, or many processes read-only, never
both. The pipeline's process is the single writer; threads inside it share the
database through cursors (``connection.cursor()``).

A full disk, an exceeded quota or an I/O error while the storage layer writes
becomes :class:`~cdp.errors.DiskError` naming the file and the problem
(:func:`storage_errors`): in :func:`transaction` (so every batch of events, every
build and publish), in :func:`connect` (creating the file, migrations), and around the
analyst publish, the report and the folders of file destinations. A transaction that
fails so is rolled back, so nothing is half-written and the command can simply be run
again once space is freed.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from cdp.errors import DiskError, StorageError, TransientError

log = logging.getLogger(__name__)

CHECKPOINT_THRESHOLD = "256MB"

# Every database's settings. No query of cdp's relies on the order rows went into a
# table (what users see is ORDERed BY), and without keeping it DuckDB writes query
# results from both cores without reassembling them in order: a build at 1M customers
# and its first analyst snapshot took ~7% less time.
_CONFIG = {"preserve_insertion_order": False}

# When each transaction this process has open began (by the wall clock, read just
# before BEGIN): see ``oldest_uncommitted``.
_open_transactions: dict[object, float] = {}
_open_lock = threading.Lock()


def connect(path: Path | str, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the database (creating it if needed) with every migration applied."""
    from cdp.storage.migrations import migrate

    path = Path(path)
    if read_only and not path.exists():
        raise StorageError(f"database {str(path)!r} does not exist")
    if not read_only and path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    try:
        with storage_errors(path):
            con = duckdb.connect(str(path), read_only=read_only, config=_CONFIG)
    except DiskError:
        if new:  # DuckDB left a file it could not finish, which it would not open again
            path.unlink(missing_ok=True)
            path.with_name(f"{path.name}.wal").unlink(missing_ok=True)
        raise
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise TransientError(
                f"database {str(path)!r} is open for writing in another process; DuckDB "
                "allows one writer at a time (stop the other cdp command, or query the "
                "analyst copy)"
            ) from None
        raise StorageError(f"cannot open database {str(path)!r}: {exc}") from None
    except duckdb.Error as exc:
        raise StorageError(f"cannot open database {str(path)!r}: {exc}") from None
    # DuckDB's own progress bar would interleave with cdp's output.
    con.execute("SET enable_progress_bar = false")
    if not read_only:
        try:
            # DuckDB checkpoints when the WAL passes 16 MB by default: every ~25k events
            # for ingest, each checkpoint a stall that grows with the table and its
            # primary-key index. Checkpoint less often.
            con.execute(f"SET checkpoint_threshold = '{CHECKPOINT_THRESHOLD}'")
            with storage_errors(path):
                migrate(con)
        except BaseException:
            con.close()
            raise
    return con


def memory_database() -> duckdb.DuckDBPyConnection:
    """An in-memory database with the full schema: for tests and dry runs."""
    from cdp.storage.migrations import migrate

    con = duckdb.connect(":memory:", config=_CONFIG)
    migrate(con)
    return con


def sql_string(text: str) -> str:
    """``text`` as a SQL string literal, for the few places DuckDB takes no bound
    parameter: ATTACH's path, COPY's target, the file list of a stored view."""
    return "'" + text.replace("'", "''") + "'"


def execute_script(
    con: duckdb.DuckDBPyConnection, script: str, params: Mapping[str, object] | None = None
) -> None:
    """Run a script of statements, binding to each only the ``$name`` parameters it
    uses (DuckDB binds parameters for a single statement only). DuckDB's own parser
    splits the script and names each statement's parameters, so a ``;`` or a ``$``
    inside a literal or a comment is read as SQL reads it."""
    params = params or {}
    for statement in con.extract_statements(script):
        used = {name: params[name] for name in statement.named_parameters}
        con.execute(statement, used)


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """BEGIN ... COMMIT, rolled back on any exception (including KeyboardInterrupt).

    A full disk or an I/O error, in the body or at COMMIT (where DuckDB writes the
    WAL), raises :class:`DiskError`; the transaction is rolled back (DuckDB rolls back
    a COMMIT that failed) and the connection stays usable, unless DuckDB invalidated
    the database (a checkpoint that failed): then every later statement fails too,
    and closing it is all that is left."""
    token = object()
    with _open_lock:
        _open_transactions[token] = time.time()
    try:
        with storage_errors():
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException:
                _roll_back(con)
                raise
            con.execute("COMMIT")
    finally:
        with _open_lock:
            del _open_transactions[token]


def _roll_back(con: duckdb.DuckDBPyConnection) -> None:
    """ROLLBACK, for a transaction that is failing anyway: a ROLLBACK that fails too
    (DuckDB invalidated the database after a failed write, or already ended the
    transaction) must not hide the error that ended it."""
    try:
        con.execute("ROLLBACK")
    except duckdb.Error as exc:
        log.debug("ROLLBACK after a failed transaction failed too: %s", exc)


# The operating system's errors that DiskError stands for, as cdp names them.
_DISK_ERRNOS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EIO: "I/O error",
}
# DuckDB words them with strerror(): the same text as Python's os.strerror().
_DISK_REASONS = {os.strerror(code): kind for code, kind in _DISK_ERRNOS.items()}
# DuckDB's errors for a failed file operation: a write (IOException), a COMMIT whose
# WAL write failed (TransactionException), a checkpoint that failed and every
# statement after it, the database being invalidated (FatalException). Other types
# (conversion, binder, constraint errors...) may quote data or SQL that happens to
# hold the same words, and are never disk errors.
_DUCKDB_FILE_ERRORS = (duckdb.IOException, duckdb.TransactionException, duckdb.FatalException)
# 'Could not write file "/path": No space left on device', 'Could not read from file ...'
_DUCKDB_FILE = re.compile(r'Could not ([a-z][a-z ]*?) file "([^"]+)"')
_HINTS = {
    "disk full": "free some space and run it again",
    "disk quota exceeded": "free some space (or raise the quota) and run it again",
    "I/O error": "check the disk and run it again",
}


def disk_error(exc: BaseException, path: Path | str | None = None) -> DiskError | None:
    """``exc`` as a :class:`DiskError` if it is a full disk, an exceeded quota or an I/O
    error (an ``OSError`` with that errno, or DuckDB's error for a file operation
    that failed so); None for anything else.

    The message starts with ``path`` (the file the user knows: the database, the
    analyst database, the report), by default the file the error names — for
    DuckDB's write-ahead log or temporary files, the database they belong to — and
    says what failed in brackets."""
    file: str | None
    if isinstance(exc, OSError):
        kind = _DISK_ERRNOS.get(exc.errno) if exc.errno is not None else None
        if kind is None:
            return None
        # The system's words: pyarrow's strerror wraps them ("Error writing bytes to
        # file. Detail: [errno 28] No space left on device").
        reason = os.strerror(exc.errno)
        file = None if exc.filename is None else os.fsdecode(exc.filename)
        detail = f"{file}: {reason}" if file else reason
    elif isinstance(exc, _DUCKDB_FILE_ERRORS):
        text = str(exc)
        found = [(text.find(reason), reason) for reason in _DISK_REASONS if reason in text]
        if not found:
            return None
        reason = min(found)[1]
        kind = _DISK_REASONS[reason]
        named = _DUCKDB_FILE.search(text)
        file = named[2] if named else None
        detail = f"could not {named[1]} {file}: {reason}" if named else reason
    else:
        return None
    subject = str(path) if path is not None else _database_of(file) if file else "the database"
    return DiskError(f"{subject}: {kind} ({detail}); {_HINTS[kind]}")


def _database_of(file: str) -> str:
    """The database a file DuckDB writes belongs to: ``x.duckdb`` for its WAL
    ``x.duckdb.wal`` and for the spill files in its ``x.duckdb.tmp`` folder."""
    return re.sub(r"(\.wal|\.tmp/.*)$", "", file)


@contextlib.contextmanager
def storage_errors(path: Path | str | None = None) -> Iterator[None]:
    """Raise a full disk, an exceeded quota or an I/O error inside as :class:`DiskError`
    naming ``path`` (see :func:`disk_error`); everything else passes unchanged.

    Layers nest: the outermost one given a ``path`` names the file, so a failed
    commit deep in the analyst publish names the analyst database, not the
    publish's hidden staging file."""
    try:
        yield
    except DiskError as exc:
        if path is not None and exc.__cause__ is not None:
            renamed = disk_error(exc.__cause__, path)
            if renamed is not None:
                raise renamed from exc.__cause__
        raise
    except (OSError, duckdb.Error) as exc:
        translated = disk_error(exc, path)
        if translated is None:
            raise
        raise translated from exc


def oldest_uncommitted() -> datetime:
    """A moment no row still to be committed by this process can be stamped before.

    Rows stamped ``current_timestamp`` (``events.received_at``) carry their
    transaction's start, and DuckDB makes them visible at its commit, so a snapshot
    taken now may lack rows stamped earlier than now — but only those of transactions
    open now, all of which began (through :func:`transaction`, which every write of
    events uses) no earlier than the moment returned. The analyst snapshot records
    it, so the next one need only look at events stamped since. One process writes
    the database, so this process's transactions are all there are."""
    now = time.time()
    with _open_lock:
        earliest = min(_open_transactions.values(), default=now)
    return datetime.fromtimestamp(min(earliest, now), UTC)
