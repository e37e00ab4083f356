-- A segment's current members with the profile columns the members table shows,
-- optionally narrowed by RFM segment and loyalty tier; the caller appends the
-- ORDER BY (a column from its fixed list) and LIMIT/OFFSET.
-- Parameters: $segment, $rfm (NULL = any), $tier (NULL = any).
SELECT m.customer_id, p.user_id, p.emails[1] AS email, m.entered_at,
       p.rfm_segment, p.loyalty_tier, p.orders, p.historic_clv, p.predicted_clv,
       p.p_alive, p.days_since_last_order, m.traits
FROM segment_membership m
JOIN customer_profiles p USING (customer_id)
WHERE m.segment = $segment
  AND ($rfm IS NULL OR p.rfm_segment = $rfm)
  AND ($tier IS NULL OR p.loyalty_tier = $tier)
