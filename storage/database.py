"""Opening the DuckDB database, and running scripts in it.

DuckDB lets one process open a file read-write, or many processes read-only, never
both. The pipeline's process is the single writer; threads inside it share the
database through cursors (``connection.cursor()``).

Transactions live in ``cdp.storage.transactions``; turning a full disk into one
error a person can act on, in ``cdp.storage.disk``. Opening a database applies every
migration (``cdp.storage.migrations``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path

import duckdb

from cdp.errors import DatabaseLocked, DiskError, StorageError
from cdp.settings import StorageSettings
from cdp.storage.disk import storage_errors
from cdp.storage.migrations import migrate

log = logging.getLogger(__name__)

CHECKPOINT_THRESHOLD = "256MB"

# Every database's settings. No query of cdp's relies on the order rows went into a
# table (what users see is ORDERed BY), and without keeping it DuckDB writes query
# results from both cores without reassembling them in order: a build at 1M customers
# and its first analyst snapshot took ~7% less time.
_CONFIG = {"preserve_insertion_order": False}


def connect_live(
    storage: StorageSettings, *, memory_limit: str | None = None, threads: int | None = None
) -> duckdb.DuckDBPyConnection:
    """The live database, with the memory and spill settings of ``[storage]``;
    ``memory_limit`` instead of ``storage.memory_limit`` and ``threads`` instead of
    DuckDB's thread per core (`cdp ingest`'s, which are lower)."""
    return connect(
        storage.db_path,
        memory_limit=memory_limit or storage.memory_limit,
        temp_directory=storage.temp_directory or None,
        threads=threads,
    )


@contextlib.contextmanager
def raised_memory_limit(
    con: duckdb.DuckDBPyConnection, limit: str, *, back_to: str
) -> Iterator[None]:
    """DuckDB's memory limit set to ``limit`` for a build, and to ``back_to`` (the
    limit the database was opened with) afterwards, which makes DuckDB give back what
    it cached beyond it. Given, not read back: DuckDB prints the limit rounded down
    (768MB as 732.4 MiB, 2GB as 1.8 GiB), and each build would have lowered it by a
    step. The limit is the database's, shared by all its cursors."""
    con.execute("SET memory_limit = $limit", {"limit": limit})
    try:
        yield
    finally:
        _set_back(con, "memory_limit", back_to)


@contextlib.contextmanager
def every_thread(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """DuckDB's threads at its default (a thread per core it may use) for a statement
    that reads the whole history, where `cdp ingest` runs with fewer ([ingest]
    duckdb_threads); set back afterwards. The setting is the database's: `cdp run`,
    whose builds share it, keeps DuckDB's default, so this raises nothing there."""
    before = con.execute("SELECT current_setting('threads')").fetchone()[0]
    con.execute("RESET threads")
    try:
        yield
    finally:
        _set_back(con, "threads", before)


def _set_back(con: duckdb.DuckDBPyConnection, setting: str, value: object) -> None:
    """Set a setting (a name from this module, never input) back after the work that
    raised it, successful or not. Through a cursor of its own: the work's may be in
    an aborted transaction, where DuckDB refuses every statement. A failure is logged,
    not raised, so as not to hide the work's own error (a memory limit may not go
    back below what is held yet; an invalidated database refuses everything)."""
    try:
        with con.cursor() as own:
            own.execute(f"SET {setting} = $value", {"value": value})
    except duckdb.Error as exc:
        log.warning("could not set DuckDB's %s back to %s: %s", setting, value, exc)


def connect(
    path: Path | str,
    *,
    read_only: bool = False,
    memory_limit: str | None = None,
    temp_directory: str | None = None,
    threads: int | None = None,
) -> duckdb.DuckDBPyConnection:
    """Open the database (creating it if needed) with every migration applied.
    ``memory_limit``, ``temp_directory`` and ``threads`` default to DuckDB's (80% of
    the machine's memory; ``<path>.tmp``; a thread per core)."""
    path = Path(path)
    config: dict[str, object] = dict(_CONFIG)
    if memory_limit is not None:
        config["memory_limit"] = memory_limit
    if threads is not None:
        config["threads"] = threads
    if temp_directory is not None:
        config["temp_directory"] = temp_directory
    if read_only and not path.exists():
        raise StorageError(f"database {str(path)!r} does not exist")
    if not read_only and path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    try:
        with storage_errors(path):
            con = duckdb.connect(str(path), read_only=read_only, config=config)
    except DiskError:
        if new:  # DuckDB left a file it could not finish, which it would not open again
            path.unlink(missing_ok=True)
            path.with_name(f"{path.name}.wal").unlink(missing_ok=True)
        raise
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise DatabaseLocked(
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
    con = duckdb.connect(":memory:", config=_CONFIG)
    migrate(con)
    return con


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
