-- A segment's current members with the profile columns the members table shows
-- (the analyst publish joins them once: segment_members), optionally narrowed by
-- RFM segment and loyalty tier; the caller appends the ORDER BY (a column from its
-- fixed list) and LIMIT/OFFSET.
-- Parameters: $segment, $rfm (NULL = any), $tier (NULL = any).
SELECT customer_id, user_id, email, entered_at, rfm_segment, loyalty_tier, orders,
       historic_clv, predicted_clv, p_alive, days_since_last_order, traits
FROM segment_members
WHERE segment = $segment
  AND ($rfm IS NULL OR rfm_segment = $rfm)
  AND ($tier IS NULL OR loyalty_tier = $tier)
