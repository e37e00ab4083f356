-- What sets each segment apart: fills the temp table build_segment_traits with the
-- top five values of a few traits per segment (list traits unnested), with each
-- value's share among members, its share in the store, and the lift.
--
-- Reads: the temp view segment_source (over build_profiles) and the temp table
-- build_segment_members (segments.compute_segments).
-- Parameters: none.

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
