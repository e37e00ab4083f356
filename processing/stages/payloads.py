"""The few fields a build reads from raw JSON payloads, parsed once per build.

Typed event columns cover most of what the stages need. What lives only in the
payload is the line items and contact details of orders, and the consent and
birthday of identify traits. Parsing JSON is the costliest thing a build does per
row, and a path-by-path extraction re-parses the document for every path (at 1M
customers: ~4 s for an order's email and phone alone). So each payload is parsed
once, by one ``json_transform`` to a typed struct, into temp tables the stages share:

- ``build_order_payloads``: per completed order event, its contact details (typed
  trait columns first) and its products, categories and units;
- ``build_identify_traits``: per identify event, its stated birthday and consent
  per channel (NULL where not stated or not a valid value).

Values are read as text and cast with TRY_CAST, so a malformed value is treated as
not stated instead of failing the build.
"""

from __future__ import annotations

from datetime import datetime

import duckdb

from cdp.storage.database import execute_script

_ORDERS = """
CREATE OR REPLACE TEMP TABLE build_order_payloads AS
WITH parsed AS (
    SELECT event_id, order_id, occurred_at, anonymous_id, user_id, email, phone,
           json_transform(payload, '{"properties": {"email": "VARCHAR", "phone": "VARCHAR",
               "products": [{"product_id": "VARCHAR", "category": "VARCHAR",
                             "quantity": "VARCHAR"}]}}').properties AS p
    FROM counted_events WHERE type = 'order_completed' AND occurred_at <= $as_of
)
SELECT event_id, order_id, occurred_at, anonymous_id, user_id,
       coalesce(email, p.email) AS email, coalesce(phone, p.phone) AS phone,
       list_transform(p.products, lambda x: x.product_id) AS product_ids,
       list_transform(p.products, lambda x: x.category) AS categories,
       list_sum(list_transform(p.products, lambda x: TRY_CAST(x.quantity AS INTEGER))) AS units
FROM parsed
"""

# Each statement with its customer, found as build_events finds it (profiles.py).
_IDENTIFY = """
CREATE OR REPLACE TEMP TABLE build_identify_traits AS
WITH parsed AS (
    SELECT coalesce(a.customer_id, u.customer_id) AS customer_id, e.event_id, e.occurred_at,
           json_transform(e.payload, '{"traits": {"birthday": "VARCHAR", "consent": {
               "email": "VARCHAR", "sms": "VARCHAR", "push": "VARCHAR", "ads": "VARCHAR"}}}'
           ).traits AS t
    FROM counted_events e
    LEFT JOIN anonymous_customers a ON a.anonymous_id = e.anonymous_id
    LEFT JOIN user_customers u ON u.user_id = e.user_id
    WHERE e.type = 'identify' AND e.occurred_at <= $as_of
      AND coalesce(a.customer_id, u.customer_id) IS NOT NULL
)
SELECT customer_id, event_id, occurred_at,
       t.birthday IS NOT NULL AS states_birthday,
       TRY_CAST(t.birthday AS DATE) AS birthday,
       TRY_CAST(t.consent.email AS BOOLEAN) AS consent_email,
       TRY_CAST(t.consent.sms AS BOOLEAN) AS consent_sms,
       TRY_CAST(t.consent.push AS BOOLEAN) AS consent_push,
       TRY_CAST(t.consent.ads AS BOOLEAN) AS consent_ads
FROM parsed
"""


def parse_order_payloads(con: duckdb.DuckDBPyConnection, as_of: datetime) -> None:
    """Fill ``build_order_payloads`` from the completed orders up to ``as_of``."""
    execute_script(con, _ORDERS, {"as_of": as_of})


def parse_identify_traits(con: duckdb.DuckDBPyConnection, as_of: datetime) -> None:
    """Fill ``build_identify_traits`` from the identify events up to ``as_of`` of
    customers the build knows (needs the profile stage's ``anonymous_customers`` and
    ``user_customers``)."""
    execute_script(con, _IDENTIFY, {"as_of": as_of})
