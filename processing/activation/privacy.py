"""``cdp forget``: delete a customer everywhere, tell the destinations, and keep them out.

Forgetting a customer, in one transaction:

1. records every identifier they had (``anon:…``, ``user:…``, ``email:…``,
   ``phone:…``) as a SHA-256 in ``suppressed_identifiers`` — identity resolution
   drops any event carrying one of them, so later events from the same identifiers
   are never stitched into a profile again;
2. deletes their events, profile, rolling windows, history, consent,
   recommendations, segment memberships (current and history), identities and aliases.

Then their exits go out at once to push destinations (Kafka topics, webhooks); file
destinations list them in the ``exited`` files of the next export. Until a
destination confirmed the exit, ``export_state`` keeps only the customer id and the
hashed email and phone — what an ad platform needs to remove them from an audience.
Last, when there is an analyst database, it is republished without them: analysts'
copy must not keep what was just deleted until the next build.

Copies a killed process left are deleted first: a publish's staging copy of the
analyst snapshot (the customer is in it) and, when the exits go out, the staging
folders of file exports.

Left as they are: dead letters (raw bytes that never became events) and files
already written by earlier exports.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb
import pyarrow as pa

from cdp.errors import ConfigError
from cdp.processing.activation.export import ExportReport, clean_up_interrupted_exports, run_export
from cdp.processing.segmentation.config import SegmentConfig
from cdp.processing.stages.identity import resolve_customer_id
from cdp.processing.stages.run import LIVE_BUILD_STATUSES
from cdp.settings import Settings
from cdp.storage.analyst import AnalystPublish, publish_analyst_database, remove_publish_leftovers
from cdp.storage.database import execute_script
from cdp.storage.paths import analyst_path
from cdp.storage.sql import read_sql
from cdp.storage.transactions import transaction


@dataclass(frozen=True)
class ForgetReport:
    customer_id: str
    identifiers: int
    events_deleted: int
    exits: ExportReport | None  # None when there was no build, so no memberships to exit
    analyst: AnalystPublish | None  # the republished analyst database, None when there is none


def find_customer(con: duckdb.DuckDBPyConnection, customer: str) -> str:
    """A customer id from an id, a merged-away alias, or an identifier such as
    ``email:ann@example.com`` (emails are matched trimmed and lower-cased)."""
    kind, _, value = customer.partition(":")
    if value and kind in ("anon", "user", "email", "phone"):
        identifier = f"email:{value.strip().lower()}" if kind == "email" else customer
        rows = con.execute(
            "SELECT customer_id FROM customer_identities WHERE identifier = $identifier",
            {"identifier": identifier},
        ).fetchall()
        found = rows[0][0] if rows else None
    else:
        found = resolve_customer_id(con, customer)
    if found is None:
        raise ConfigError(
            f"customer {customer!r}: not a known customer id, alias or identifier "
            "(identifiers look like email:ann@example.com, user:42, anon:abc, phone:+4412345)"
        )
    return found


def forget_customer(
    con: duckdb.DuckDBPyConnection, settings: Settings, config: SegmentConfig, customer: str
) -> ForgetReport:
    customer_id = find_customer(con, customer)
    remove_publish_leftovers(settings)
    ids = [customer_id] + [
        row[0]
        for row in con.execute(
            "SELECT alias_id FROM customer_aliases WHERE customer_id = $id", {"id": customer_id}
        ).fetchall()
    ]
    identifiers = con.sql(
        "SELECT DISTINCT identifier FROM customer_identities "
        "WHERE list_contains($ids, customer_id)",
        params={"ids": ids},
    ).to_arrow_table()
    con.register("forget_identifiers", identifiers)
    con.register("forget_customers", pa.table({"customer_id": ids}))
    try:
        with transaction(con):
            execute_script(
                con,
                read_sql("cdp.processing.activation", "privacy_forget.sql"),
                {"now": datetime.now(UTC)},
            )
            deleted = con.execute("SELECT count(*) FROM forget_events").fetchall()[0][0]
    finally:
        con.unregister("forget_identifiers")
        con.unregister("forget_customers")
    has_build = con.execute(
        "SELECT count(*) FROM builds WHERE list_contains($live, status)",
        {"live": list(LIVE_BUILD_STATUSES)},
    ).fetchall()
    exits = None
    if has_build[0][0]:
        exits = run_export(
            con, settings, config, only_customers=ids, destination_types=("kafka", "webhook")
        )
    else:
        clean_up_interrupted_exports(con, settings, config)
    analyst = None
    if analyst_path(settings).exists():
        analyst = publish_analyst_database(con, settings)
    return ForgetReport(customer_id, identifiers.num_rows, int(deleted), exits, analyst)
