"""Opening the DuckDB database, and transactions as context managers.

DuckDB lets one process open a file read-write, or many processes read-only, never
both. The pipeline's process is the single writer; threads inside it share the
database through cursors (``connection.cursor()``).
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from cdp.errors import StorageError, TransientError

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
    try:
        con = duckdb.connect(str(path), read_only=read_only, config=_CONFIG)
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
    """Run ``;``-separated statements, binding to each only the ``$name`` parameters it
    uses (DuckDB binds parameters for a single statement only). Statements are split
    on a ``;`` that ends a line, so keep literals free of that."""
    params = params or {}
    for statement in re.split(r";\s*\n", script):
        if not statement.strip() or all(
            line.strip().startswith("--") or not line.strip() for line in statement.splitlines()
        ):
            continue
        used = {
            name: value
            for name, value in params.items()
            if re.search(rf"\${re.escape(name)}\b", statement)
        }
        con.execute(statement, used)


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """BEGIN ... COMMIT, rolled back on any exception (including KeyboardInterrupt)."""
    token = object()
    with _open_lock:
        _open_transactions[token] = time.time()
    try:
        con.execute("BEGIN TRANSACTION")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
    finally:
        with _open_lock:
            del _open_transactions[token]


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
