-- Publishes the staged segments, inside the build's publish transaction: replaces
-- segment_membership, closes and opens stays in segment_membership_history, records
-- segment_sizes, and replaces segment_traits, product_affinity,
-- customer_recommendations and customer_consent.
--
-- Makes the temp table segment_changes (who entered and who left each segment).
-- Reads temp tables: build_segment_members, build_segment_traits,
-- build_product_affinity, build_recommendations, build_consent (segment stage);
-- configured_segments (registered by segments.publish_segments).
-- Parameters: $as_of, $as_of_date (as-of's date, for segment_sizes).

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
