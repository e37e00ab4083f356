-- The store KPIs behind the formula CLVs (definitions in clv.py's docstring).
--
-- Makes temp tables: build_kpis (one row; the marketing spend columns are NULL
-- here, and set by clv.py when clv.marketing_spend_csv is configured) and
-- build_window_revenue (each buyer's net revenue in the KPI window, for
-- clv.FORMULA_CLV_COLUMNS).
-- Reads temp tables: order_facts, build_events, build_profiles (profiles stage).
-- Parameters: $as_of, $window (KPI window, days), $inactive_days,
-- $min_history (days of history before the lifespan is measured), $min_churned,
-- $default_lifespan (years), $margin (gross margin), $currency (reporting).

CREATE OR REPLACE TEMP TABLE build_kpis AS
WITH window_orders AS (
    SELECT * FROM order_facts
    WHERE NOT cancelled AND ordered_at > $as_of - to_days($window)
),
totals AS (
    SELECT count(*) AS orders, count(DISTINCT customer_id) AS buyers,
           coalesce(sum(gross - refunded), 0) AS revenue
    FROM window_orders
),
buyers_ever AS (SELECT count(*) FILTER (WHERE orders > 0) AS buyers,
                       count(*) FILTER (WHERE orders > 1) AS repeaters,
                       count(*) AS customers,
                       min(first_order_at) AS first_order
                FROM build_profiles),
months AS (
    SELECT unnest(generate_series(date_trunc('month', $as_of::TIMESTAMP) - INTERVAL 12 MONTH,
                                  date_trunc('month', $as_of::TIMESTAMP) - INTERVAL 1 MONTH,
                                  INTERVAL 1 MONTH)) AS month_start
),
activity AS (  -- active at a date = an order within the inactivity window before it
    SELECT m.month_start, o.customer_id,
           bool_or(o.ordered_at <= m.month_start) AS active_at_start,
           bool_or(o.ordered_at > m.month_start + INTERVAL 1 MONTH - to_days($inactive_days))
               AS active_at_end
    FROM months m
    JOIN order_facts o
      ON NOT o.cancelled
     AND o.ordered_at > m.month_start - to_days($inactive_days)
     AND o.ordered_at <= m.month_start + INTERVAL 1 MONTH
    GROUP BY ALL
),
monthly AS (
    SELECT month_start,
           count(*) FILTER (WHERE active_at_start) AS active_start,
           count(*) FILTER (WHERE active_at_start AND NOT active_at_end) AS churned
    FROM activity GROUP BY 1
),
churn AS (
    SELECT avg(churned / active_start) AS churn_rate
    FROM monthly WHERE active_start > 0
),
lifespan AS (
    SELECT count(*) AS churned_customers,
           avg(date_diff('day', first_order_at, last_order_at)) / 365.25 AS measured_years
    FROM build_profiles
    WHERE orders > 0 AND date_diff('day', last_order_at, $as_of) > $inactive_days
),
visitors AS (
    SELECT count(DISTINCT customer_key) AS viewers FROM build_events
    WHERE type = 'product_viewed' AND occurred_at > $as_of - to_days($window)
),
new_customers AS (
    SELECT count(*) AS n FROM build_profiles WHERE first_order_at > $as_of - to_days($window)
),
measured AS (
    SELECT CASE WHEN date_diff('day', b.first_order, $as_of) >= $min_history
                     AND l.churned_customers >= $min_churned AND l.measured_years > 0
                THEN l.measured_years END AS years
    FROM buyers_ever b, lifespan l
),
base AS (
    SELECT
        $as_of::DATE AS as_of, $window AS window_days, $currency AS reporting_currency,
        b.customers, t.buyers, t.orders, t.revenue::DECIMAL(18, 4) AS revenue,
        t.revenue / nullif(t.orders, 0) AS aov,
        t.orders / nullif(t.buyers, 0) AS purchase_frequency,
        t.revenue / nullif(t.buyers, 0) AS customer_value,  -- = AOV x purchase frequency
        b.repeaters / nullif(b.buyers, 0) AS repeat_rate,
        c.churn_rate AS churn_rate_monthly,
        1 - c.churn_rate AS retention_rate_monthly,
        coalesce(ms.years, $default_lifespan) AS lifespan_years,
        ms.years IS NULL AS lifespan_is_default,
        t.revenue / ($window / 30.4375) / nullif(t.buyers, 0) AS monthly_revenue_per_customer,
        $margin AS gross_margin,
        t.buyers / nullif(v.viewers, 0) AS conversion_rate,
        n.n AS new_customers
    FROM totals t, buyers_ever b, churn c, measured ms, visitors v, new_customers n
)
SELECT *,
       customer_value * lifespan_years AS basic_clv,
       monthly_revenue_per_customer / nullif(churn_rate_monthly, 0) * gross_margin AS advanced_clv,
       customer_value * lifespan_years * conversion_rate AS max_cost_per_click,
       NULL::DOUBLE AS marketing_spend, NULL::DOUBLE AS cac,
       NULL::DOUBLE AS ltv_to_cac, NULL::DOUBLE AS clv_minus_cac
FROM base;

-- Each buyer's net revenue in the window, for their advanced CLV.
CREATE OR REPLACE TEMP TABLE build_window_revenue AS
SELECT customer_id, sum(gross - refunded) AS revenue FROM order_facts
WHERE ordered_at > $as_of - to_days($window) GROUP BY 1;
