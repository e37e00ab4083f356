"""Transactions as context managers, and what they tell about rows not yet committed.

A transaction that fails is rolled back, so nothing is half-written; a full disk in
one becomes :class:`~cdp.errors.DiskError` (``cdp.storage.disk``), and the command
can simply be run again once space is freed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import duckdb

from cdp.storage.disk import storage_errors

log = logging.getLogger(__name__)

# When each transaction this process has open began (by the wall clock, read just
# before BEGIN): see ``oldest_uncommitted``.
_open_transactions: dict[object, float] = {}
_open_lock = threading.Lock()


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
