"""Segment membership, computed at every build, with its history.

The build's last stage. From this build's profiles it derives:

- ``product_affinity``: pairs of products bought in the same order (support,
  confidence, lift), and ``customer_recommendations``: for each buyer, the products
  their purchases are most often bought with that they have not bought yet;
- ``customer_consent``: each customer's latest stated consent per channel, with when;
- the **segment source**: profiles plus rolling-window activity pivoted into columns
  (``orders_30d`` …), recommendations and derived dates (next order anniversary,
  next birthday) — the columns segment rules and traits may use;
- members of every configured segment, and ``segment_traits``: what sets each
  segment apart (most common values of a few traits and their lift).

Publishing (inside the build's publish transaction) replaces ``segment_membership``,
closes the stays of customers who left (``exited_at``), opens stays for those who
entered, and records sizes in ``segment_sizes``. Re-running the same as-of first
undoes that as-of's entries and exits, so it replaces rather than duplicates.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from cdp.processing.stages.profiles import (
    ProfileColumns,
    register_reference_tables,
    set_profile_columns,
)
from cdp.settings import Settings
from cdp.storage.database import execute_script, memory_database
from cdp.storage.sql import quote_identifier

if TYPE_CHECKING:  # only named in signatures: the segments file loads this module's catalog
    from cdp.processing.segmentation.config import SegmentConfig

_AFFINITY = """
CREATE OR REPLACE TEMP TABLE build_order_products AS
SELECT DISTINCT order_id, customer_id, unnest(product_ids) AS product_id
FROM order_facts WHERE NOT cancelled AND customer_id IS NOT NULL;

CREATE OR REPLACE TEMP TABLE build_product_affinity AS
WITH orders AS (SELECT count(DISTINCT order_id) AS n FROM build_order_products),
singles AS (SELECT product_id, count(DISTINCT order_id) AS n FROM build_order_products GROUP BY 1),
pairs AS (
    SELECT a.product_id, b.product_id AS other_product_id, count(DISTINCT a.order_id) AS together
    FROM build_order_products a
    JOIN build_order_products b ON a.order_id = b.order_id AND a.product_id <> b.product_id
    GROUP BY ALL HAVING count(DISTINCT a.order_id) >= $min_together
)
SELECT p.product_id, p.other_product_id, p.together AS orders_together,
       p.together / o.n AS support,
       p.together / sa.n AS confidence,
       (p.together / sa.n) / (sb.n / o.n) AS lift
FROM pairs p CROSS JOIN orders o
JOIN singles sa ON sa.product_id = p.product_id
JOIN singles sb ON sb.product_id = p.other_product_id;

-- Each product's ten strongest partners are enough to rank candidates, and keep the
-- join below linear in the number of buyers. The large candidate aggregation groups
-- by one integer, buyer * 2^24 + product number (up to 16.7M products), rather than
-- id strings.
CREATE OR REPLACE TEMP TABLE build_recommendations AS
WITH partners AS (
    SELECT * FROM build_product_affinity
    QUALIFY row_number() OVER (PARTITION BY product_id
                               ORDER BY confidence DESC, other_product_id) <= 10
),
products AS (  -- numbered in id order (so a smaller number wins a tie), from 1
    SELECT product_id, row_number() OVER (ORDER BY product_id)::INTEGER AS product
    FROM (SELECT DISTINCT product_id FROM build_order_products)
),
numbered_partners AS (
    SELECT a.product, b.product AS other, p.confidence
    FROM partners p
    JOIN products a ON a.product_id = p.product_id
    JOIN products b ON b.product_id = p.other_product_id
),
buyers AS (
    SELECT customer_id, row_number() OVER ()::BIGINT AS buyer
    FROM (SELECT DISTINCT customer_id FROM build_order_products)
),
bought AS (
    SELECT DISTINCT b.buyer * 16777216 + p.product AS key
    FROM build_order_products o JOIN buyers b USING (customer_id) JOIN products p USING (product_id)
),
candidates AS (
    SELECT (b.key // 16777216) * 16777216 + p.other AS key, sum(p.confidence) AS score
    FROM bought b JOIN numbered_partners p ON p.product = b.key % 16777216
    GROUP BY 1
),
-- Best score first, ties to the smaller product id (as numbered). The ids are joined
-- on before ranking: looking them up afterwards in a list of every product id, one
-- copy of that list per buyer, took a third of this statement.
ranked AS (
    SELECT c.key // 16777216 AS buyer,
           max_by(p.product_id, {'score': c.score, 'tie': -(c.key % 16777216)},
                  $per_customer) AS recommended_products
    FROM candidates c
    ANTI JOIN bought b USING (key)
    JOIN products p ON p.product = c.key % 16777216
    GROUP BY 1
)
SELECT b.customer_id, r.recommended_products
FROM ranked r JOIN buyers b USING (buyer);

CREATE OR REPLACE TEMP TABLE build_consent AS
WITH stated AS (  -- one row per stated channel (UNPIVOT leaves out NULLs: not stated)
    UNPIVOT (SELECT customer_id, event_id, occurred_at, consent_email AS email,
                    consent_sms AS sms, consent_push AS push, consent_ads AS ads
             FROM build_identify_traits)
    ON email, sms, push, ads INTO NAME channel VALUE granted
)
SELECT customer_id, channel, arg_max(granted, occurred_at) AS granted,
       max(occurred_at) AS stated_at, arg_max(event_id, occurred_at) AS event_id
FROM stated GROUP BY ALL;
"""

_MACROS = """
-- The first anniversary of day d on or after as_of's date (at least one year after d).
CREATE OR REPLACE TEMP MACRO cdp_next_anniversary(d, as_of) AS
    CASE WHEN d::DATE + to_years(greatest(1, year(as_of) - year(d))) >= as_of::DATE
         THEN d::DATE + to_years(greatest(1, year(as_of) - year(d)))
         ELSE d::DATE + to_years(greatest(1, year(as_of) - year(d)) + 1) END;
"""

# Traits summarized per segment (list traits unnested), top five values each.
_TRAITS = """
CREATE OR REPLACE TEMP TABLE build_segment_traits AS
WITH values_of AS (
    SELECT customer_id, 'top_categories_bought' AS trait, unnest(top_categories_bought) AS value
    FROM segment_source
    UNION ALL SELECT customer_id, 'loyalty_tier', loyalty_tier FROM segment_source
    UNION ALL SELECT customer_id, 'journey_stage', journey_stage FROM segment_source
    UNION ALL SELECT customer_id, 'rfm_segment', rfm_segment FROM segment_source
),
-- A customer has a value of a trait once (the top categories are distinct) and is a
-- member of a segment once, so plain counts count customers: no DISTINCT, whose
-- hashing of every row was most of this statement's time.
store AS (
    SELECT trait, value, count(*) / (SELECT count(*) FROM segment_source) AS store_share
    FROM values_of WHERE value IS NOT NULL GROUP BY ALL
),
sizes AS (SELECT segment, count(*) AS n FROM build_segment_members GROUP BY 1),
counted AS (
    SELECT m.segment, v.trait, v.value, count(*) AS members
    FROM build_segment_members m JOIN values_of v USING (customer_id)
    WHERE v.value IS NOT NULL GROUP BY ALL
)
SELECT c.segment, c.trait, c.value, c.members, c.members / z.n AS share, s.store_share,
       (c.members / z.n) / s.store_share AS lift
FROM counted c JOIN sizes z USING (segment) JOIN store s USING (trait, value)
QUALIFY row_number() OVER (PARTITION BY c.segment, c.trait ORDER BY c.members DESC, c.value) <= 5;
"""

_PUBLISH = """
-- Re-running an as-of replaces it: undo that as-of's entries and exits first.
DELETE FROM segment_membership_history WHERE entered_at = $as_of;

UPDATE segment_membership_history SET exited_at = NULL WHERE exited_at = $as_of;

CREATE OR REPLACE TEMP TABLE segment_changes AS
SELECT coalesce(m.segment, h.segment) AS segment,
       coalesce(m.customer_id, h.customer_id) AS customer_id,
       m.customer_id IS NOT NULL AS is_member,
       h.customer_id IS NOT NULL AS was_member
FROM build_segment_members m
FULL JOIN (SELECT segment, customer_id FROM segment_membership_history WHERE exited_at IS NULL) h
    USING (segment, customer_id);

INSERT OR REPLACE INTO segment_sizes
SELECT $as_of_date, s.segment,
       count(c.customer_id) FILTER (WHERE c.is_member),
       count(c.customer_id) FILTER (WHERE c.is_member AND NOT c.was_member),
       count(c.customer_id) FILTER (WHERE c.was_member AND NOT c.is_member)
FROM configured_segments s LEFT JOIN segment_changes c USING (segment)
GROUP BY 1, 2;

UPDATE segment_membership_history h SET exited_at = $as_of
FROM segment_changes c
WHERE h.exited_at IS NULL AND h.segment = c.segment AND h.customer_id = c.customer_id
  AND NOT c.is_member;

INSERT INTO segment_membership_history (segment, customer_id, entered_at)
SELECT segment, customer_id, $as_of FROM segment_changes WHERE is_member AND NOT was_member;

DELETE FROM segment_membership;

INSERT INTO segment_membership (segment, customer_id, as_of, entered_at, traits)
SELECT m.segment, m.customer_id, $as_of, h.entered_at, m.traits
FROM build_segment_members m
JOIN segment_membership_history h
  ON h.segment = m.segment AND h.customer_id = m.customer_id AND h.exited_at IS NULL;

DELETE FROM segment_traits;

INSERT INTO segment_traits SELECT * FROM build_segment_traits;

DELETE FROM product_affinity;

INSERT INTO product_affinity SELECT * FROM build_product_affinity;

DELETE FROM customer_recommendations;

INSERT INTO customer_recommendations SELECT * FROM build_recommendations;

DELETE FROM customer_consent;

INSERT INTO customer_consent SELECT * FROM build_consent;
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
    execute_script(con, _AFFINITY, params)
    con.execute(_MACROS)


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
    con.execute(_TRAITS)
    return int(con.execute("SELECT count(*) FROM build_segment_members").fetchall()[0][0])


def publish_segments(
    con: duckdb.DuckDBPyConnection, config: SegmentConfig, as_of: datetime
) -> None:
    """Write the staged segments (inside the build's publish transaction)."""
    con.register("configured_segments", pa.table({"segment": [s.name for s in config.segments]}))
    execute_script(con, _PUBLISH, {"as_of": as_of, "as_of_date": as_of.date()})
