"""Opening the DuckDB database, and transactions as context managers.

DuckDB lets one process open a file read-write, or many processes read-only, never
both. The pipeline's process is the single writer; threads inside it share the
database through cursors (``connection.cursor()``).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import duckdb

from cdp.errors import StorageError, TransientError

CHECKPOINT_THRESHOLD = "256MB"


def connect(path: Path | str, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the database (creating it if needed) with every migration applied."""
    from cdp.storage.migrations import migrate

    path = Path(path)
    if read_only and not path.exists():
        raise StorageError(f"database {str(path)!r} does not exist")
    if not read_only and path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(path), read_only=read_only)
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

    con = duckdb.connect(":memory:")
    migrate(con)
    return con


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
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")
