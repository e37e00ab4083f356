-- RFM scores and segments of the buyers (rules in rfm.py's docstring).
--
-- Makes the temp table build_rfm: per buyer, recency days, frequency and monetary
-- value in the window, their scores, cell, total and segment (merged into
-- build_profiles by rfm.RFM_COLUMNS).
-- Reads temp tables: build_profiles, order_facts (profiles stage).
-- Parameters: $as_of, $window (rfm.window_days), $k (rfm.scores: 3 or 5),
-- $window_recency (recency scored by slices of the window, not by rank).

CREATE OR REPLACE TEMP TABLE build_rfm AS
WITH base AS (
    SELECT p.customer_id,
           date_diff('day', p.last_order_at, $as_of) AS recency_days,
           count(o.order_id) FILTER (
               WHERE NOT o.cancelled AND o.ordered_at > $as_of - to_days($window))
               AS frequency,
           coalesce(sum(o.gross - o.refunded)
               FILTER (WHERE o.ordered_at > $as_of - to_days($window)), 0) AS monetary
    FROM build_profiles p JOIN order_facts o USING (customer_id)
    WHERE p.orders > 0
    GROUP BY ALL
),
ranked AS (  -- ranked against the other buyers of the window only
    SELECT *,
           count(*) OVER () AS n,
           rank() OVER (ORDER BY recency_days DESC) AS recency_rank,
           rank() OVER (ORDER BY frequency) AS frequency_rank,
           rank() OVER (ORDER BY monetary) AS monetary_rank
    FROM base WHERE frequency > 0
),
scored AS (
    SELECT customer_id, recency_days, frequency, monetary,
           CASE WHEN $window_recency
                THEN greatest(1, $k - floor(recency_days * $k / $window)::INTEGER)
                ELSE 1 + floor($k * (recency_rank - 1) / n)::INTEGER END AS r,
           1 + floor($k * (frequency_rank - 1) / n)::INTEGER AS f,
           1 + floor($k * (monetary_rank - 1) / n)::INTEGER AS m
    FROM ranked
    UNION ALL  -- bought before, but not within the window: the lowest scores
    SELECT customer_id, recency_days, frequency, monetary, 1, 1, 1 FROM base WHERE frequency = 0
),
five AS (  -- segment rules are written on the 1-5 scale
    SELECT *, CASE WHEN $k = 3 THEN 2 * r - 1 ELSE r END AS r5,
              CASE WHEN $k = 3 THEN 2 * f - 1 ELSE f END AS f5
    FROM scored
)
SELECT customer_id, recency_days, frequency, monetary,
       r AS recency_score, f AS frequency_score, m AS monetary_score,
       r::VARCHAR || f::VARCHAR || m::VARCHAR AS cell, r + f + m AS total,
       CASE
           WHEN r5 = 5 AND f5 >= 4 THEN 'Champions'
           WHEN r5 BETWEEN 3 AND 4 AND f5 >= 4 THEN 'Loyal'
           WHEN r5 = 5 AND f5 = 1 THEN 'New'
           WHEN r5 = 4 AND f5 = 1 THEN 'Promising'
           WHEN r5 >= 4 AND f5 BETWEEN 2 AND 3 THEN 'Potential loyalist'
           WHEN r5 = 3 AND f5 = 3 THEN 'Need attention'
           WHEN r5 = 3 AND f5 <= 2 THEN 'About to sleep'
           WHEN r5 <= 2 AND f5 = 5 THEN 'Can''t lose them'
           WHEN r5 <= 2 AND f5 >= 3 THEN 'At risk'
           WHEN r5 = 1 AND f5 = 1 THEN 'Lost'
           ELSE 'Hibernating'
       END AS segment
FROM five;
