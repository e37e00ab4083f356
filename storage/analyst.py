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
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from cdp.settings import Settings
from cdp.storage.database import transaction

# The tables analysts get, in the order the dictionary lists them. Internals —
# consumer offsets, duplicate records, export state, suppressed identifiers — stay
# in the live database.
ANALYST_TABLES = (
    "events",
    "customer_profiles",
    "customer_identities",
    "customer_aliases",
    "customer_rolling_windows",
    "profile_history",
    "store_kpis",
    "clv_model_runs",
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

# Columns left out of the copy: the raw bytes of dead letters may hold personal data
# from a message that never became an event; the reason and source are what analysts need.
_EXCLUDED = {"dead_letters": ("raw", "message_key")}

ANALYST_STORAGE_VERSION = "v1.0.0"

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


def analyst_path(settings: Settings) -> Path:
    """``storage.analyst_db_path``, else ``<live name>.analyst.duckdb`` beside the live file."""
    configured = settings.storage.analyst_db_path
    if configured:
        return Path(configured)
    live = settings.storage.db_path
    return live.with_name(f"{live.stem}.analyst.duckdb")


def _sql_string(text: str) -> str:
    # ATTACH takes no bound parameters; the path is quoted as a SQL string literal.
    return "'" + text.replace("'", "''") + "'"


def publish_analyst_database(con: duckdb.DuckDBPyConnection, settings: Settings) -> AnalystPublish:
    """Copy the analyst tables and the dictionary to a new file, then swap it in."""
    started = time.monotonic()
    target = analyst_path(settings)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    for leftover in (staging, staging.with_name(staging.name + ".wal")):
        leftover.unlink(missing_ok=True)
    # Written in DuckDB 1.0's storage format, so that analysts' clients — the stock
    # CLI, BI tools' drivers, notebooks — need not be as new as cdp's DuckDB.
    con.execute(
        f"ATTACH {_sql_string(str(staging))} AS analyst_snapshot "
        f"(STORAGE_VERSION '{ANALYST_STORAGE_VERSION}')"
    )
    try:
        # One transaction on the live database: every table comes from the same
        # snapshot, even while ingest commits alongside.
        with transaction(con):
            for table in ANALYST_TABLES:  # constants, not input
                excluded = _EXCLUDED.get(table)
                columns = f"* EXCLUDE ({', '.join(excluded)})" if excluded else "*"
                con.execute(
                    f"CREATE TABLE analyst_snapshot.{table} AS SELECT {columns} FROM main.{table}"
                )
            excluded = [f"{t}.{c}" for t, columns in _EXCLUDED.items() for c in columns]
            con.execute(_DICTIONARY, {"tables": list(ANALYST_TABLES), "excluded": excluded})
        con.execute("DETACH analyst_snapshot")
    except BaseException:
        con.execute("DETACH DATABASE IF EXISTS analyst_snapshot")
        staging.unlink(missing_ok=True)
        raise
    os.replace(staging, target)
    return AnalystPublish(target, target.stat().st_size, time.monotonic() - started)
