"""The analyst database as the UI reads it: read-only, and always the latest publish.

A publish writes a new file and renames it over the old one (``storage.analyst``).
A connection holds the file it opened, so the UI compares the path's identity
(device, inode, modification time) with the one it opened before each request and
opens the new file when it changed. Requests already running keep their cursor on
the old file — its Parquet event parts are kept until the publish after next — and
finish with a consistent snapshot; the next click reads the new one. No restart, no
lock: DuckDB allows any number of read-only openers besides the writer of the live
database.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from cdp.errors import StorageError
from cdp.processing.stages.identity import NORMALIZE_MACROS
from cdp.storage.database import execute_script
from cdp.storage.sql import sql_string

_ALIAS = "snapshot"


def _open(path: Path, memory_limit: str) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory DuckDB with the snapshot attached read-only. Not
    ``duckdb.connect(path)``: DuckDB caches one instance per path in a process, and
    would hand back the instance of the file that was replaced (and refuse the
    publish's own reader in the same process, whose settings differ)."""
    connection = duckdb.connect(":memory:")
    try:
        # Times as the pages label them (UTC), whatever the server's local zone. Not in
        # connect()'s config: ICU is not loaded yet there, and DuckDB refuses it.
        connection.execute("SET GLOBAL TimeZone = 'UTC'")  # GLOBAL: the cursors too
        connection.execute("SET GLOBAL memory_limit = $limit", {"limit": memory_limit})
        connection.execute(f"ATTACH {sql_string(str(path))} AS {_ALIAS} (READ_ONLY)")
    except BaseException:
        connection.close()
        raise
    return connection


class NotPublished(StorageError):
    """There is no analyst database (yet) at the path."""


class AnalystSnapshot:
    """Hands out cursors on the newest published snapshot of one path."""

    def __init__(self, path: Path, memory_limit: str = "512MB") -> None:
        self.path = path
        self.memory_limit = memory_limit  # ui.memory_limit, for each snapshot opened
        self._lock = threading.Lock()
        self._identity: tuple[int, int, int] | None = None
        self._connection: duckdb.DuckDBPyConnection | None = None
        self._previous: duckdb.DuckDBPyConnection | None = None
        self.opened = 0  # how many snapshots this process opened (tests read it)

    def _current(self) -> duckdb.DuckDBPyConnection:
        """A new cursor on the snapshot in place, opening it if it changed."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            raise NotPublished(
                f"no analyst database at {self.path} yet: it is published by every build "
                "(`cdp build`, or `cdp run` once it has caught up)"
            ) from None
        identity = (stat.st_dev, stat.st_ino, stat.st_mtime_ns)
        with self._lock:
            if identity != self._identity or self._connection is None:
                try:
                    connection = _open(self.path, self.memory_limit)
                except duckdb.Error as exc:
                    raise StorageError(
                        f"{self.path}: cannot open the analyst database: {exc}"
                    ) from None
                # The previous connection is kept (not closed, not collected) until the
                # next publish: closing a connection closes its cursors, and requests
                # still running on the previous snapshot hold cursors of it.
                self._previous = self._connection
                self._connection, self._identity = connection, identity
                self.opened += 1
            # Under the lock too: a connection is not safe to use from two threads at once.
            return self._connection.cursor()

    @contextmanager
    def cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor of its own for one request (DuckDB connections are not shared
        between threads), with identity resolution's normalization macros."""
        cursor = self._current()
        try:
            cursor.execute(f"USE {_ALIAS}")  # a cursor starts in the in-memory catalog
            execute_script(cursor, NORMALIZE_MACROS)
            yield cursor
        finally:
            cursor.close()
