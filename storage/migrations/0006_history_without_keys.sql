-- Dated history tables and customer_identities lose their PRIMARY KEY constraint,
-- like the tables every build replaces (migration 0004). Replacing a build date's
-- history (a refresh re-running today's as-of rewrites a million rows at 1M
-- customers) made DuckDB's commit spend ~11 s per table maintaining the keys' index;
-- without one it is a fraction of a second. The build still writes one row per key:
-- it deletes an as-of's rows before inserting them, and changes only the identities
-- that changed. Columns are unchanged; their descriptions are restated here because
-- a rebuilt table starts without comments.

CREATE TABLE customer_identities_rebuilt (
    identifier     VARCHAR NOT NULL,
    customer_id    VARCHAR NOT NULL,
    first_seen_at  TIMESTAMPTZ NOT NULL
);
INSERT INTO customer_identities_rebuilt FROM customer_identities;
DROP TABLE customer_identities;
ALTER TABLE customer_identities_rebuilt RENAME TO customer_identities;
COMMENT ON TABLE customer_identities IS 'Every identifier ever seen and its customer.';
COMMENT ON COLUMN customer_identities.identifier IS 'anon:..., user:..., email:... (normalized) or phone:...';
COMMENT ON COLUMN customer_identities.customer_id IS 'The customer it belongs to.';
COMMENT ON COLUMN customer_identities.first_seen_at IS 'When it was first seen.';

CREATE TABLE profile_history_rebuilt (
    as_of            DATE NOT NULL,
    customer_id      VARCHAR NOT NULL,
    orders           BIGINT, net_revenue DECIMAL(18, 4), historic_clv DECIMAL(18, 4),
    predicted_clv    DOUBLE, p_alive DOUBLE, rfm_segment VARCHAR,
    journey_stage    VARCHAR, loyalty_tier VARCHAR
);
INSERT INTO profile_history_rebuilt FROM profile_history;
DROP TABLE profile_history;
ALTER TABLE profile_history_rebuilt RENAME TO profile_history;
COMMENT ON TABLE profile_history IS 'Key metrics per customer per build date, for trends.';
COMMENT ON COLUMN profile_history.as_of IS 'Build date.';
COMMENT ON COLUMN profile_history.customer_id IS 'Customer.';
COMMENT ON COLUMN profile_history.orders IS 'Orders to date.';
COMMENT ON COLUMN profile_history.net_revenue IS 'Net revenue to date.';
COMMENT ON COLUMN profile_history.historic_clv IS 'Historic CLV.';
COMMENT ON COLUMN profile_history.predicted_clv IS 'Predicted CLV.';
COMMENT ON COLUMN profile_history.p_alive IS 'Probability alive.';
COMMENT ON COLUMN profile_history.rfm_segment IS 'RFM segment.';
COMMENT ON COLUMN profile_history.journey_stage IS 'Journey stage.';
COMMENT ON COLUMN profile_history.loyalty_tier IS 'Loyalty tier.';

CREATE TABLE segment_membership_history_rebuilt (
    segment        VARCHAR NOT NULL,
    customer_id    VARCHAR NOT NULL,
    entered_at     TIMESTAMPTZ NOT NULL,
    exited_at      TIMESTAMPTZ
);
INSERT INTO segment_membership_history_rebuilt FROM segment_membership_history;
DROP TABLE segment_membership_history;
ALTER TABLE segment_membership_history_rebuilt RENAME TO segment_membership_history;
COMMENT ON TABLE segment_membership_history IS 'Every stay in a segment.';
COMMENT ON COLUMN segment_membership_history.segment IS 'Segment.';
COMMENT ON COLUMN segment_membership_history.customer_id IS 'Customer.';
COMMENT ON COLUMN segment_membership_history.entered_at IS 'Build as-of they entered.';
COMMENT ON COLUMN segment_membership_history.exited_at IS 'Build as-of they left (NULL while a member).';
