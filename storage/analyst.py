"""The analyst database: a read-only snapshot of the live database, for analysts' own
DuckDB clients while the service keeps writing the live one.

DuckDB lets one process write a file or many processes read it, never both, so
``cdp run`` (the only writer of the live database) publishes a copy after every
build: the tables analysts use, plus ``data_dictionary`` describing each of them
and their columns (from the comments the migrations put on them). The copy is
written to a temporary file in the same folder and renamed over the previous one,
so a reader sees either the whole previous snapshot or the whole new one. A reader
that keeps a connection open across a publish keeps reading the snapshot it opened
(it holds the old file); a new connection sees the new one.

``events``, most of the data, is a view over Parquet parts in a folder beside the
file, each publish adding a part with the events received since the previous one
(see :mod:`cdp.storage.analyst_events`).

A publish killed midway leaves its hidden ``.<name>.tmp-<pid>`` file (a copy of the
previous snapshot, personal data included) and events parts no snapshot names;
:func:`remove_publish_leftovers` deletes them before the next build (from
:func:`cdp.processing.jobs.pipeline.clean_up_interrupted_builds`, which the service also
runs when it starts) and before ``cdp forget``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import duckdb

from cdp.settings import Settings
from cdp.storage.analyst_events import (
    events_view,
    part_names,
    parts_bytes,
    remove_unnamed_parts,
    retire_parts,
    write_event_parts,
)
from cdp.storage.database import execute_script
from cdp.storage.disk import storage_errors
from cdp.storage.paths import analyst_path, events_folder
from cdp.storage.sql import read_sql, sql_string
from cdp.storage.transactions import oldest_uncommitted, transaction

log = logging.getLogger(__name__)

# The tables analysts get, in the order the dictionary lists them. Internals —
# consumer offsets, duplicate records, export state, suppressed identifiers — stay
# in the live database.
ANALYST_TABLES = (
    "events",
    "customer_profiles",
    "orders",
    "customer_identities",
    "customer_aliases",
    "customer_rolling_windows",
    "profile_history",
    "store_kpis",
    "clv_model_runs",
    "clv_backtests",
    "rfm_segment_summary",
    "builds",
    "segment_membership",
    "segment_membership_history",
    "segment_sizes",
    "segment_traits",
    "product_affinity",
    "customer_recommendations",
    "customer_consent",
    "export_runs",
    "dead_letters",
)

# Tables derived in the snapshot for lookups (``analyst_lookups.sql``); not in the live one.
LOOKUP_TABLES = ("customer_events", "customer_identities_by_customer", "segment_members")

# Copies sorted by the column pages look rows up by: DuckDB keeps min/max per row
# group, so a lookup of one key (or an email prefix) reads one row group, not the table.
_SORTED_BY = {
    "customer_profiles": "customer_id",
    "orders": "customer_id, ordered_at",
    "customer_identities": "identifier",
    "customer_aliases": "alias_id",
    "customer_rolling_windows": "customer_id",
    "segment_membership": "segment, customer_id",
    "segment_membership_history": "customer_id",
    "customer_recommendations": "customer_id",
    "customer_consent": "customer_id",
}

# Columns left out of the copy: the raw bytes of dead letters may hold personal data
# from a message that never became an event; the reason and source are what analysts need.
_EXCLUDED = {"dead_letters": ("raw", "message_key")}

ANALYST_STORAGE_VERSION = "v1.0.0"

# Builds that finished (or were running) after the previous snapshot may have
# replaced profile_history dates it holds; an hour's margin re-copies a few more dates
# rather than trust two clocks to the second.
_MARGIN = timedelta(hours=1)

# How a copied snapshot catches up, per table that grows large; the others are
# rewritten. Both keep every row the live table has, once, or the row counts differ.
# (``events`` catches up in Parquet parts: see analyst_events.)
_CHANGES = {
    "profile_history": """
CREATE OR REPLACE TEMP TABLE analyst_changed_dates AS
SELECT DISTINCT timezone('UTC', as_of)::DATE AS as_of FROM main.builds
WHERE finished_at IS NULL OR finished_at > $since;

DELETE FROM analyst_snapshot.profile_history
WHERE as_of IN (SELECT as_of FROM analyst_changed_dates);

INSERT INTO analyst_snapshot.profile_history
SELECT * FROM main.profile_history WHERE as_of IN (SELECT as_of FROM analyst_changed_dates);
""",
}

_PUBLISH_INFO = """
DROP TABLE IF EXISTS analyst_snapshot.publish_info;

CREATE TABLE analyst_snapshot.publish_info AS
SELECT $snapshot_at::TIMESTAMPTZ AS snapshot_at, $version::INTEGER AS schema_version,
       $incremental::VARCHAR[] AS incremental_tables,
       $events_through::TIMESTAMPTZ AS events_complete_through,
       $event_parts::VARCHAR[] AS event_parts;

INSERT INTO analyst_snapshot.data_dictionary VALUES
    ('publish_info', NULL, NULL, 'When this snapshot of the live database was taken.', 0),
    ('publish_info', 'snapshot_at', 'TIMESTAMP WITH TIME ZONE',
     'The live database as it was at this moment.', 1),
    ('publish_info', 'schema_version', 'INTEGER', 'Schema version (migrations applied).', 2),
    ('publish_info', 'incremental_tables', 'VARCHAR[]',
     'Tables brought up to date in a copy of the previous snapshot; the rest were copied.', 3),
    ('publish_info', 'events_complete_through', 'TIMESTAMP WITH TIME ZONE',
     'Every event received (received_at) before this moment is in the snapshot.', 4),
    ('publish_info', 'event_parts', 'VARCHAR[]',
     'The Parquet files the events view reads, relative to the <snapshot name>.events ' ||
     'folder beside this file.', 5);
"""

_DICTIONARY = """
CREATE TABLE analyst_snapshot.data_dictionary AS
SELECT t.table_name, NULL::VARCHAR AS column_name, NULL::VARCHAR AS data_type,
       t.comment AS description, 0 AS position
FROM duckdb_tables() t
WHERE t.database_name = current_database() AND t.schema_name = 'main'
  AND list_contains($tables, t.table_name)
UNION ALL
SELECT c.table_name, c.column_name, c.data_type, c.comment, c.column_index
FROM duckdb_columns() c
WHERE c.database_name = current_database() AND c.schema_name = 'main'
  AND list_contains($tables, c.table_name)
  AND NOT list_contains($excluded, c.table_name || '.' || c.column_name)
ORDER BY list_position($tables, table_name), position
"""


@dataclass(frozen=True)
class AnalystPublish:
    path: Path
    bytes: int
    seconds: float
    incremental: tuple[str, ...] = ()  # tables updated in a copy of the last snapshot


def publish_analyst_database(con: duckdb.DuckDBPyConnection, settings: Settings) -> AnalystPublish:
    """Write the next snapshot to a temporary file, then swap it in.

    When the previous snapshot is there and was written by this schema, it is the
    starting point: the file is copied and only what changed is applied to the copy —
    a Parquet part with the events received since (they are only ever added, except
    by ``cdp forget``), and ``profile_history`` for the dates builds wrote since. The
    other tables are small and rewritten. A row count that does not match the live
    table afterwards (a forgotten customer's events were deleted, say) makes that
    table a full copy.

    A full disk (or an I/O error) is a :class:`~cdp.errors.DiskError` naming the
    analyst database; the staging file and the parts this publish wrote are deleted,
    and the previous snapshot stays in place. What killed publishes left is for the
    caller to delete first (:func:`remove_publish_leftovers`)."""
    target = analyst_path(settings)
    with storage_errors(target):
        return _publish(con, target)


def _publish(con: duckdb.DuckDBPyConnection, target: Path) -> AnalystPublish:
    started = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = events_folder(target)
    staging = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    # Other processes' leftovers are remove_publish_leftovers' (run by the caller);
    # a file of this name would be a dead process's with the same id, never a base.
    staging.unlink(missing_ok=True)
    staging.with_name(f"{staging.name}.wal").unlink(missing_ok=True)
    previous = _previous_snapshot(target, _schema_version(con))
    existing = part_names(folder)  # a failed publish removes only what it wrote
    incremental: list[str] = []
    try:
        if previous is not None:
            shutil.copyfile(target, staging)
            con.execute(f"ATTACH {sql_string(str(staging))} AS analyst_snapshot")
        else:
            # Written in DuckDB 1.0's storage format, so that analysts' clients — the
            # stock CLI, BI tools' drivers, notebooks — need not be as new as cdp's DuckDB.
            con.execute(
                f"ATTACH {sql_string(str(staging))} AS analyst_snapshot "
                f"(STORAGE_VERSION '{ANALYST_STORAGE_VERSION}')"
            )
        events_through = oldest_uncommitted()  # read before this snapshot's transaction
        # One transaction on the live database: every table comes from the same
        # snapshot, even while ingest commits alongside.
        with transaction(con):
            snapshot_at = con.execute("SELECT current_timestamp").fetchall()[0][0]
            parts = write_event_parts(
                con,
                folder,
                previous and previous.event_parts,
                previous and previous.events_through,
            )
            con.execute("DROP VIEW IF EXISTS analyst_snapshot.events")
            con.execute(events_view(folder, parts.files))
            if parts.incremental:
                incremental.append("events")
            for table in ANALYST_TABLES:  # constants, not input
                if table == "events":
                    continue
                if previous is not None and _apply_changes(con, table, previous.snapshot_at):
                    incremental.append(table)
                else:
                    _copy_whole(con, table)
            excluded = [f"{t}.{c}" for t, columns in _EXCLUDED.items() for c in columns]
            con.execute("DROP TABLE IF EXISTS analyst_snapshot.data_dictionary")
            con.execute(_DICTIONARY, {"tables": list(ANALYST_TABLES), "excluded": excluded})
            execute_script(
                con,
                _PUBLISH_INFO,
                {
                    "snapshot_at": snapshot_at,
                    "version": _schema_version(con),
                    "incremental": incremental,
                    "events_through": events_through,
                    "event_parts": list(parts.files),
                },
            )
            execute_script(con, read_sql("cdp.storage", "analyst_lookups.sql"))
        # Detaching checkpoints the copy: on a full disk this is where it fails.
        con.execute("DETACH analyst_snapshot")
    except BaseException:
        try:
            con.execute("DETACH DATABASE IF EXISTS analyst_snapshot")
        except duckdb.Error as exc:  # the live database was invalidated; the error says why
            log.debug("could not detach the analyst snapshot after a failed publish: %s", exc)
        staging.unlink(missing_ok=True)
        staging.with_name(f"{staging.name}.wal").unlink(missing_ok=True)
        retire_parts(folder, keep=existing)
        raise
    os.replace(staging, target)
    # The snapshot just replaced may still be open in a reader: its parts stay, unless
    # they must not (see analyst_events).
    kept = previous.event_parts if previous and not parts.retire_previous else ()
    retire_parts(folder, keep=parts.files + kept)
    return AnalystPublish(
        target,
        target.stat().st_size + parts_bytes(folder),
        time.monotonic() - started,
        tuple(incremental),
    )


def remove_publish_leftovers(settings: Settings) -> list[Path]:
    """Delete what killed publishes left beside the analyst database — staging files
    (and their WAL) of any process id, and events parts the snapshot in place does
    not need — and return them. When the snapshot cannot be read, its parts are left
    alone (the next publish rewrites them all and deletes the rest).

    Only the process that holds the live database for writing publishes, so when it
    starts a build or forget (which run it first), nothing else is writing them."""
    target = analyst_path(settings)
    if not target.parent.is_dir():
        return []
    staging = re.compile(rf"^\.{re.escape(target.name)}\.tmp-\d+(\.wal)?$")
    removed = []
    for leftover in sorted(target.parent.iterdir()):
        if staging.match(leftover.name) and leftover.is_file():
            leftover.unlink(missing_ok=True)
            removed.append(leftover)
    in_place = _snapshot_parts(target)
    if in_place is not None:
        named, incremental = in_place
        removed += remove_unnamed_parts(events_folder(target), named, keep_older=incremental)
    return removed


def builds_in_snapshot(settings: Settings) -> set[int]:
    """The builds the analyst database in place holds in its copy of ``builds``: a
    build still ``publishing`` there had its analyst database published. Empty
    without a readable snapshot."""
    target = analyst_path(settings)
    if not target.exists():
        return set()
    try:
        with duckdb.connect(str(target), read_only=True) as snapshot:
            return {row[0] for row in snapshot.execute("SELECT build_id FROM builds").fetchall()}
    except duckdb.Error:
        return set()


def _snapshot_parts(path: Path) -> tuple[tuple[str, ...], bool] | None:
    """The events parts the snapshot at ``path`` names, and whether it added them to
    its predecessor's; no parts without a snapshot; None when it cannot be read."""
    if not path.exists():
        return (), False
    try:
        with duckdb.connect(str(path), read_only=True) as snapshot:
            rows = snapshot.execute(
                "SELECT event_parts, list_contains(incremental_tables, 'events') FROM publish_info"
            ).fetchall()
    except duckdb.Error:
        return None
    if not rows:
        return None
    return tuple(rows[0][0]), bool(rows[0][1])


def _copy_whole(con: duckdb.DuckDBPyConnection, table: str) -> None:
    excluded = _EXCLUDED.get(table)
    columns = f"* EXCLUDE ({', '.join(excluded)})" if excluded else "*"
    con.execute(f"DROP TABLE IF EXISTS analyst_snapshot.{table}")
    order = f" ORDER BY {_SORTED_BY[table]}" if table in _SORTED_BY else ""
    con.execute(
        f"CREATE TABLE analyst_snapshot.{table} AS SELECT {columns} FROM main.{table}{order}"
    )


def _apply_changes(con: duckdb.DuckDBPyConnection, table: str, previous: datetime) -> bool:
    """Bring ``table`` of the copied snapshot up to date; False when it must be copied."""
    script = _CHANGES.get(table)
    if script is None:
        return False
    execute_script(con, script, {"since": previous - _MARGIN})
    same = con.execute(
        f"SELECT (SELECT count(*) FROM analyst_snapshot.{table}) = "
        f"(SELECT count(*) FROM main.{table})"
    ).fetchall()[0][0]
    return bool(same)


def _schema_version(con: duckdb.DuckDBPyConnection) -> int:
    return int(con.execute("SELECT max(version) FROM schema_migrations").fetchall()[0][0])


@dataclass(frozen=True)
class _Previous:
    snapshot_at: datetime
    events_through: datetime
    event_parts: tuple[str, ...]


def _previous_snapshot(path: Path, schema_version: int) -> _Previous | None:
    """The snapshot at ``path``, if it can be the base of the next one."""
    if not path.exists():
        return None
    try:
        with duckdb.connect(str(path), read_only=True) as old:
            row = old.execute(
                "SELECT snapshot_at, schema_version, events_complete_through, event_parts "
                "FROM publish_info"
            ).fetchall()
    except duckdb.Error:
        return None  # unreadable, or written by an earlier cdp: start afresh
    if not row or row[0][1] != schema_version:
        return None
    snapshot_at, _, events_through, event_parts = row[0]
    return _Previous(snapshot_at, events_through, tuple(event_parts))
