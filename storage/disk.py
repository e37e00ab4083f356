"""Full disks, exceeded quotas and I/O errors, as one error a person can act on.

A full disk, an exceeded quota or an I/O error while the storage layer writes
becomes :class:`~cdp.errors.DiskError` naming the file and the problem
(:func:`storage_errors`): in transactions (every batch of events, every build and
publish), in opening the database (creating the file, migrations), and around the
analyst publish, the report and the folders of file destinations.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterator
from pathlib import Path

import duckdb

from cdp.errors import DiskError

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
