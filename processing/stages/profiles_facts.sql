-- The build's customers and events, and its orders as facts in the reporting
-- currency: the first statements of the profile stage (profiles.build_profiles).
--
-- Makes temp tables: fx, build_customers (customer_id numbered as customer_key),
-- anonymous_customers, user_customers, build_events (events up to as-of, each
-- with its customer_key), order_facts (one row per completed order).
-- Reads: counted_events (run); temp build_identities (identity), build_order_payloads
-- (payloads); fx_rates (registered by profiles.register_reference_tables).
-- Parameters: $as_of.

CREATE OR REPLACE TEMP TABLE fx AS SELECT * FROM fx_rates;

-- Customers numbered for this build: the per-event tables below carry this integer,
-- not the id string, so grouping and joining them is cheaper (at 1M customers the
-- profile statement's per-customer lists took ~30% less time than on the strings).
CREATE OR REPLACE TEMP TABLE build_customers AS
SELECT customer_id, (row_number() OVER (ORDER BY customer_id))::INTEGER AS customer_key
FROM (SELECT DISTINCT customer_id FROM build_identities);

-- Events join their customer on the raw ids (no per-event string building).
CREATE OR REPLACE TEMP TABLE anonymous_customers AS
SELECT i.identifier[6:] AS anonymous_id, i.customer_id, c.customer_key
FROM build_identities i JOIN build_customers c USING (customer_id)
WHERE starts_with(i.identifier, 'anon:');

CREATE OR REPLACE TEMP TABLE user_customers AS
SELECT i.identifier[6:] AS user_id, i.customer_id, c.customer_key
FROM build_identities i JOIN build_customers c USING (customer_id)
WHERE starts_with(i.identifier, 'user:');

-- Only the columns the build reads. Ids and payloads are the widest columns and no
-- stage needs them per event: orders' and identify events' payloads are parsed once
-- (payloads.py). At 1M customers this copy takes half the time it did with them.
CREATE OR REPLACE TEMP TABLE build_events AS
SELECT e.type, e.family, e.occurred_at, e.product_id, e.category, e.price,
       e.quantity, e.cart_id, e.order_id, e.revenue, e.currency,
       coalesce(a.customer_key, u.customer_key) AS customer_key
FROM counted_events e
LEFT JOIN anonymous_customers a ON a.anonymous_id = e.anonymous_id
LEFT JOIN user_customers u ON u.user_id = e.user_id
WHERE e.occurred_at <= $as_of
  -- Events of suppressed (forgotten) identifiers have no customer: never profiled.
  AND coalesce(a.customer_key, u.customer_key) IS NOT NULL;

CREATE OR REPLACE TEMP TABLE order_facts AS
WITH completed AS (
    SELECT order_id,
           arg_min(customer_key, occurred_at) AS customer_key,
           min(occurred_at) AS ordered_at,
           arg_min(revenue / fx.rate, occurred_at)::DECIMAL(18, 4) AS gross,
           arg_min(quantity, occurred_at) AS quantity
    FROM build_events JOIN fx USING (currency)
    WHERE type = 'order_completed'
    GROUP BY order_id
),
lines AS (  -- an order sent twice under different event ids: its first sending counts
    SELECT order_id,
           arg_min(units, occurred_at) AS units,
           arg_min(product_ids, occurred_at) AS product_ids,
           arg_min(categories, occurred_at) AS categories
    FROM build_order_payloads GROUP BY order_id
),
refunds AS (
    SELECT order_id, sum(revenue / fx.rate) AS amount, bool_or(revenue IS NULL) AS whole_order
    FROM build_events LEFT JOIN fx USING (currency)
    WHERE type = 'order_refunded' GROUP BY 1
),
cancels AS (SELECT DISTINCT order_id FROM build_events WHERE type = 'order_cancelled')
SELECT c.* EXCLUDE (quantity), k.customer_id,
       coalesce(l.units, c.quantity, 1) AS units, l.product_ids, l.categories,
       x.order_id IS NOT NULL AS cancelled,
       CASE WHEN x.order_id IS NOT NULL OR r.whole_order THEN c.gross
            ELSE least(coalesce(r.amount, 0), c.gross) END::DECIMAL(18, 4) AS refunded,
       c.ordered_at::DATE AS day
FROM completed c
JOIN build_customers k USING (customer_key)
LEFT JOIN lines l USING (order_id)
LEFT JOIN refunds r USING (order_id)
LEFT JOIN cancels x USING (order_id);
