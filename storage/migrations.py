"""Versioned schema migrations, run by every command that opens the database.

Migrations are the ``migrations/NNNN_name.sql`` files shipped with the package,
applied in order, each in its own transaction together with its row in
``schema_migrations``. Running them again does nothing. A database whose newest
applied version is above what this cdp knows was written by a newer release; it is
refused with a clear error rather than half-understood.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import duckdb

from cdp.errors import SchemaVersionError, StorageError
from cdp.storage.transactions import transaction

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    found = []
    for entry in resources.files("cdp.storage").joinpath("migrations").iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in found]
    if len(set(versions)) != len(versions):
        raise StorageError(f"two migrations share a version number: {versions}")
    return found


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL,"
        " applied_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp)"
    )
    row = con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchall()[0]
    return int(row[0]) if row else 0


def migrate(con: duckdb.DuckDBPyConnection) -> list[Migration]:
    """Apply the migrations the database lacks; return the ones applied."""
    migrations = available_migrations()
    latest_known = migrations[-1].version if migrations else 0
    version = current_version(con)
    if version > latest_known:
        raise SchemaVersionError(
            f"this database is at schema version {version}, written by a newer cdp; "
            f"this cdp knows versions up to {latest_known}. Upgrade cdp to open it."
        )
    applied = []
    for migration in migrations:
        if migration.version <= version:
            continue
        with transaction(con):
            con.execute(migration.sql)
            con.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($version, $name)",
                {"version": migration.version, "name": migration.name},
            )
        applied.append(migration)
    return applied
