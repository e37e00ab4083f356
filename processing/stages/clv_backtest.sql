-- The backtest's figures per purchase-count model: build_clv_backtests, one row per
-- model in backtest_models, shaped like clv_backtests.
-- Reads: backtest_purchases (customer_id, day, value: every order day up to $as_of),
--        backtest_forecasts (customer_id, x, model, forecast, spend: each calibration
--        customer's repeat purchases before $calibration_end, and per model the
--        purchases forecast for the holdout and the expected spend per purchase),
--        backtest_models (model, converged, message).
-- Parameters: $as_of, $calibration_end (DATE), $holdout_days, $shortened, $note.

CREATE OR REPLACE TEMP TABLE backtest_actuals AS
SELECT customer_id, count(DISTINCT day) AS purchases, sum(value)::DOUBLE AS revenue
FROM backtest_purchases
WHERE day > $calibration_end::DATE AND day <= $as_of::DATE
GROUP BY customer_id;

CREATE OR REPLACE TEMP TABLE build_clv_backtests AS
WITH joined AS (
    -- Customers new in the holdout have no calibration history: not forecast, left out.
    SELECT f.model, f.customer_id, f.x, f.forecast, f.spend,
           coalesce(a.purchases, 0) AS actual, coalesce(a.revenue, 0) AS revenue,
           ntile(10) OVER (PARTITION BY f.model ORDER BY f.forecast * f.spend DESC,
                                                        f.customer_id) AS decile
    FROM backtest_forecasts f LEFT JOIN backtest_actuals a USING (customer_id)
),
totals AS (
    SELECT model,
           count(*) AS customers,
           sum(forecast) AS forecast_purchases,
           sum(actual) AS actual_purchases,
           avg(abs(forecast - actual)) AS mae,
           sqrt(avg((forecast - actual) ^ 2)) AS rmse,
           sum(actual * spend) / nullif(sum(actual), 0) AS forecast_mean_spend,
           sum(revenue) / nullif(sum(actual), 0) AS actual_mean_spend,
           sum(revenue) FILTER (WHERE decile = 1) / nullif(sum(revenue), 0)
               AS top_decile_revenue_share
    FROM joined GROUP BY model
),
buckets AS (
    SELECT model, least(x, 7)::INTEGER AS bucket, count(*) AS customers,
           avg(forecast) AS mean_forecast, avg(actual) AS mean_actual
    FROM joined GROUP BY ALL
),
calibration AS (
    SELECT model,
           list({'repeat_purchases': CASE WHEN bucket = 7 THEN '7+' ELSE bucket::VARCHAR END,
                 'customers': customers, 'mean_forecast': mean_forecast,
                 'mean_actual': mean_actual} ORDER BY bucket) AS calibration
    FROM buckets GROUP BY model
)
SELECT $as_of::DATE AS as_of,
       m.model,
       $calibration_end::DATE AS calibration_end,
       $holdout_days::INTEGER AS holdout_days,
       $shortened::BOOLEAN AS holdout_shortened,
       coalesce(t.customers, 0) AS customers,
       t.forecast_purchases,
       t.actual_purchases::BIGINT AS actual_purchases,
       t.forecast_purchases / nullif(t.actual_purchases, 0) AS ratio,
       t.mae,
       t.rmse,
       c.calibration,
       t.forecast_mean_spend,
       t.actual_mean_spend,
       t.top_decile_revenue_share,
       m.converged,
       false AS chosen,
       concat_ws('; ', m.message, nullif($note, '')) AS message,
       current_timestamp AS created_at
FROM backtest_models m
LEFT JOIN totals t USING (model)
LEFT JOIN calibration c USING (model)
ORDER BY m.model;
