-- Product affinity, recommendations and consent: the segment stage's inputs
-- (segment_source.stage_segment_inputs).
--
-- Makes temp tables: build_order_products (distinct products per order),
-- build_product_affinity (pairs bought together: support, confidence, lift),
-- build_recommendations (per buyer, the partners of what they bought that they
-- have not bought yet), build_consent (each customer's latest consent per channel).
-- Reads temp tables: order_facts (profiles stage), build_identify_traits (payloads).
-- Parameters: $min_together (orders a pair needs), $per_customer
-- (recommendations per buyer).

CREATE OR REPLACE TEMP TABLE build_order_products AS
SELECT DISTINCT order_id, customer_id, unnest(product_ids) AS product_id
FROM order_facts WHERE NOT cancelled AND customer_id IS NOT NULL;

CREATE OR REPLACE TEMP TABLE build_product_affinity AS
WITH orders AS (SELECT count(DISTINCT order_id) AS n FROM build_order_products),
singles AS (SELECT product_id, count(DISTINCT order_id) AS n FROM build_order_products GROUP BY 1),
pairs AS (
    SELECT a.product_id, b.product_id AS other_product_id, count(DISTINCT a.order_id) AS together
    FROM build_order_products a
    JOIN build_order_products b ON a.order_id = b.order_id AND a.product_id <> b.product_id
    GROUP BY ALL HAVING count(DISTINCT a.order_id) >= $min_together
)
SELECT p.product_id, p.other_product_id, p.together AS orders_together,
       p.together / o.n AS support,
       p.together / sa.n AS confidence,
       (p.together / sa.n) / (sb.n / o.n) AS lift
FROM pairs p CROSS JOIN orders o
JOIN singles sa ON sa.product_id = p.product_id
JOIN singles sb ON sb.product_id = p.other_product_id;

-- Each product's ten strongest partners are enough to rank candidates, and keep the
-- join below linear in the number of buyers. The large candidate aggregation groups
-- by one integer, buyer * 2^24 + product number (up to 16.7M products), rather than
-- id strings.
CREATE OR REPLACE TEMP TABLE build_recommendations AS
WITH partners AS (
    SELECT * FROM build_product_affinity
    QUALIFY row_number() OVER (PARTITION BY product_id
                               ORDER BY confidence DESC, other_product_id) <= 10
),
products AS (  -- numbered in id order (so a smaller number wins a tie), from 1
    SELECT product_id, row_number() OVER (ORDER BY product_id)::INTEGER AS product
    FROM (SELECT DISTINCT product_id FROM build_order_products)
),
numbered_partners AS (
    SELECT a.product, b.product AS other, p.confidence
    FROM partners p
    JOIN products a ON a.product_id = p.product_id
    JOIN products b ON b.product_id = p.other_product_id
),
buyers AS (
    SELECT customer_id, row_number() OVER ()::BIGINT AS buyer
    FROM (SELECT DISTINCT customer_id FROM build_order_products)
),
bought AS (
    SELECT DISTINCT b.buyer * 16777216 + p.product AS key
    FROM build_order_products o JOIN buyers b USING (customer_id) JOIN products p USING (product_id)
),
candidates AS (
    SELECT (b.key // 16777216) * 16777216 + p.other AS key, sum(p.confidence) AS score
    FROM bought b JOIN numbered_partners p ON p.product = b.key % 16777216
    GROUP BY 1
),
-- Best score first, ties to the smaller product id (as numbered). The ids are joined
-- on before ranking: looking them up afterwards in a list of every product id, one
-- copy of that list per buyer, took a third of this statement.
ranked AS (
    SELECT c.key // 16777216 AS buyer,
           max_by(p.product_id, {'score': c.score, 'tie': -(c.key % 16777216)},
                  $per_customer) AS recommended_products
    FROM candidates c
    ANTI JOIN bought b USING (key)
    JOIN products p ON p.product = c.key % 16777216
    GROUP BY 1
)
SELECT b.customer_id, r.recommended_products
FROM ranked r JOIN buyers b USING (buyer);

CREATE OR REPLACE TEMP TABLE build_consent AS
WITH stated AS (  -- one row per stated channel (UNPIVOT leaves out NULLs: not stated)
    UNPIVOT (SELECT customer_id, event_id, occurred_at, consent_email AS email,
                    consent_sms AS sms, consent_push AS push, consent_ads AS ads
             FROM build_identify_traits)
    ON email, sms, push, ads INTO NAME channel VALUE granted
)
SELECT customer_id, channel, arg_max(granted, occurred_at) AS granted,
       max(occurred_at) AS stated_at, arg_max(event_id, occurred_at) AS event_id
FROM stated GROUP BY ALL;
