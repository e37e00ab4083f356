"""The segment source: the columns segment rules and traits may read.

Made by the segments stage before membership is computed. It stages product
affinity, recommendations and consent in temp tables:

- ``product_affinity``: pairs of products bought in the same order (support,
  confidence, lift), and ``customer_recommendations``: for each buyer, the products
  their purchases are most often bought with that they have not bought yet;
- ``customer_consent``: each customer's latest stated consent per channel, with when;

and adds to ``build_profiles`` the rolling-window activity pivoted into columns
(``orders_30d`` …), recommendations and derived dates (next order anniversary, next
birthday). :func:`segment_catalog` runs the same query over an empty schema, so that
the segments file's rules are checked against exactly the columns a build makes
(``cdp.processing.segmentation.config`` calls it; this module imports nothing of
segmentation, so the two do not import each other).
"""

from __future__ import annotations

from datetime import datetime

import duckdb

from cdp.processing.stages.profiles import (
    ProfileColumns,
    register_reference_tables,
    set_profile_columns,
)
from cdp.settings import Settings
from cdp.storage.database import execute_script, memory_database
from cdp.storage.sql import read_sql

_PACKAGE = "cdp.processing.stages"

_MACROS = """
-- The first anniversary of day d on or after as_of's date (at least one year after d).
CREATE OR REPLACE TEMP MACRO cdp_next_anniversary(d, as_of) AS
    CASE WHEN d::DATE + to_years(greatest(1, year(as_of) - year(d))) >= as_of::DATE
         THEN d::DATE + to_years(greatest(1, year(as_of) - year(d)))
         ELSE d::DATE + to_years(greatest(1, year(as_of) - year(d)) + 1) END;
"""


def segment_source_columns(settings: Settings) -> ProfileColumns:
    """The columns segment rules and traits may use beyond the profile's own: rolling
    windows pivoted into columns (``orders_30d`` …), the first email and phone, derived
    dates and recommendations. They are added to ``build_profiles`` in the build's one
    rewrite of it (each copy of the million wide rows costs ~1 s), and the segment
    source is a view of it (``segment_source``). Needs ``$as_of`` and
    :func:`stage_segment_inputs`'s tables."""
    # Window lengths are validated integers from config, formatted as numbers: the
    # only values in this module's SQL that do not arrive as bound parameters.
    windows = sorted({int(days) for days in settings.clv.rolling_windows_days})
    measures = ("orders", "net_revenue", "product_views", "cart_adds")
    names = [f"{measure}_{days}d" for days in windows for measure in measures]
    pivot = ", ".join(
        f"max({measure}) FILTER (WHERE window_days = {days}) AS {measure}_{days}d"
        for days in windows
        for measure in measures
    )
    return ProfileColumns(
        additions=f"""p.emails[1] AS email,
       p.phones[1] AS phone,
       {", ".join(f"rw.{name}" for name in names)},
       date_diff('day', p.first_order_at, $as_of) AS days_since_first_order,
       cdp_next_anniversary(p.first_order_at, $as_of) AS next_order_anniversary,
       cdp_next_anniversary(p.birthday, $as_of) AS next_birthday,
       month(p.birthday) = month($as_of) AS birthday_this_month,
       rec.recommended_products""",
        joins=f"""LEFT JOIN (
    SELECT customer_id, {pivot} FROM build_rolling_windows GROUP BY 1
) rw ON rw.customer_id = p.customer_id
LEFT JOIN build_recommendations rec ON rec.customer_id = p.customer_id""",
        name="segment_source.segment_source_columns",
    )


def segment_catalog(settings: Settings) -> dict[str, str]:
    """Column → DuckDB type of the segment source, for checking rules at config load.

    Built by running the real source query over an empty in-memory schema, so the
    catalog can never drift from what the build evaluates."""
    con = memory_database()
    try:
        register_reference_tables(con, settings)
        con.execute("CREATE TEMP TABLE build_profiles AS SELECT * FROM customer_profiles")
        con.execute(
            "CREATE TEMP TABLE build_rolling_windows AS SELECT * FROM customer_rolling_windows"
        )
        con.execute("CREATE TEMP TABLE build_recommendations AS FROM customer_recommendations")
        con.execute(_MACROS)
        set_profile_columns(
            con, segment_source_columns(settings), params={"as_of": datetime(2000, 1, 1)}
        )
        return {row[0]: row[1] for row in con.execute("DESCRIBE build_profiles").fetchall()}
    finally:
        con.close()


def stage_segment_inputs(
    con: duckdb.DuckDBPyConnection, settings: Settings, as_of: datetime
) -> None:
    """Stage product affinity, recommendations and consent in temp tables, and the
    macros :func:`segment_source_columns` uses. Needs the profile stage's temp tables."""
    params = {
        "as_of": as_of,
        "min_together": settings.segments.min_orders_together,
        "per_customer": settings.segments.recommendations_per_customer,
    }
    execute_script(con, read_sql(_PACKAGE, "segment_source_inputs.sql"), params)
    con.execute(_MACROS)
