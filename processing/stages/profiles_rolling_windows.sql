-- Activity in trailing windows: fills the temp table build_rolling_windows (created
-- empty, with customer_rolling_windows' columns), one row per customer and window:
-- orders, net revenue, product views and cart adds in the window_days before as-of.
--
-- Reads temp tables: build_profiles (profiles.sql), build_customers, build_events,
-- order_facts (profiles_facts.sql); rolling_windows (registered by
-- profiles.register_reference_tables).
-- Parameters: $as_of.

DELETE FROM build_rolling_windows;

INSERT INTO build_rolling_windows
WITH orders AS (
    SELECT o.customer_key, w.window_days,
           count(*) FILTER (WHERE NOT o.cancelled) AS orders,
           sum(o.gross - o.refunded) AS net_revenue
    FROM order_facts o
    JOIN rolling_windows w ON o.ordered_at > $as_of - to_days(w.window_days)
    GROUP BY ALL
),
activity AS (
    SELECT e.customer_key, w.window_days,
           count(*) FILTER (WHERE e.type = 'product_viewed') AS product_views,
           count(*) FILTER (WHERE e.type = 'product_added') AS cart_adds
    FROM build_events e
    JOIN rolling_windows w ON e.occurred_at > $as_of - to_days(w.window_days)
    WHERE e.type IN ('product_viewed', 'product_added')
    GROUP BY ALL
)
SELECT p.customer_id, w.window_days,
       coalesce(o.orders, 0), coalesce(o.net_revenue, 0),
       coalesce(a.product_views, 0), coalesce(a.cart_adds, 0)
FROM build_profiles p
JOIN build_customers k USING (customer_id)
CROSS JOIN rolling_windows w
LEFT JOIN orders o ON o.customer_key = k.customer_key AND o.window_days = w.window_days
LEFT JOIN activity a ON a.customer_key = k.customer_key AND a.window_days = w.window_days;
