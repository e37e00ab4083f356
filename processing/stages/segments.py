"""Segment membership, computed at every build, with its history.

The build's last stage. From the segment source (``segment_source``: the profile
columns segment rules may read) it derives the members of every configured segment,
and ``segment_traits``: what sets each segment apart (most common values of a few
traits and their lift).

Publishing (inside the build's publish transaction) replaces ``segment_membership``,
closes the stays of customers who left (``exited_at``), opens stays for those who
entered, and records sizes in ``segment_sizes``. Re-running the same as-of first
undoes that as-of's entries and exits, so it replaces rather than duplicates.
"""

from __future__ import annotations

from datetime import datetime

import duckdb
import pyarrow as pa

from cdp.processing.segmentation.config import SegmentConfig
from cdp.storage.database import execute_script
from cdp.storage.sql import quote_identifier, read_sql

# This stage's longer statements are .sql files beside this module:
# segments_traits.sql and segments_publish.sql.
_PACKAGE = "cdp.processing.stages"


def compute_segments(con: duckdb.DuckDBPyConnection, config: SegmentConfig, as_of: datetime) -> int:
    """Stage segment members and traits in temp tables; return the number of
    memberships. Needs ``build_profiles`` with :func:`segment_source_columns`."""
    con.execute("CREATE OR REPLACE TEMP VIEW segment_source AS SELECT * FROM build_profiles")
    con.execute(
        "CREATE OR REPLACE TEMP TABLE build_segment_members "
        "(segment VARCHAR, customer_id VARCHAR, traits JSON)"
    )
    for segment in config.segments:
        traits = segment.definition.traits
        traits_sql = (
            "to_json(struct_pack("
            + ", ".join(f"{quote_identifier(t)} := {quote_identifier(t)}" for t in traits)
            + "))"
            if traits
            else "NULL"
        )
        execute_script(  # binds only the parameters the rule uses
            con,
            f"INSERT INTO build_segment_members SELECT $segment, customer_id, {traits_sql} "
            f"FROM segment_source WHERE {segment.rule.sql}",
            {"segment": segment.name, "as_of": as_of, **segment.rule.params},
        )
    con.execute(read_sql(_PACKAGE, "segments_traits.sql"))
    return int(con.execute("SELECT count(*) FROM build_segment_members").fetchall()[0][0])


def publish_segments(
    con: duckdb.DuckDBPyConnection, config: SegmentConfig, as_of: datetime
) -> None:
    """Write the staged segments (inside the build's publish transaction)."""
    con.register("configured_segments", pa.table({"segment": [s.name for s in config.segments]}))
    execute_script(
        con,
        read_sql(_PACKAGE, "segments_publish.sql"),
        {"as_of": as_of, "as_of_date": as_of.date()},
    )
