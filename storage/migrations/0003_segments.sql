-- Segments, activation exports, consent and suppression. Analysts rely on these names:
-- change them only through a new migration. Tables every build replaces whole have
-- no PRIMARY KEY constraint (the build writes one row per key by construction; see
-- 0004): DuckDB commits a full delete-and-reinsert of an indexed table far slower.

-- Who is in each configured segment now (replaced by every build that publishes
-- current profiles). entered_at is the as-of of the build that first put the customer
-- in the segment this time; traits are the segment's configured export traits.
CREATE TABLE segment_membership (
    segment        VARCHAR NOT NULL,
    customer_id    VARCHAR NOT NULL,
    as_of          TIMESTAMPTZ NOT NULL,
    entered_at     TIMESTAMPTZ NOT NULL,
    traits         JSON                       -- one row per (segment, customer_id)
);

-- Every stay in a segment: one row per entry; exited_at stays NULL while the customer
-- is still a member. "Who entered Champions this week":
--   SELECT customer_id FROM segment_membership_history
--   WHERE segment = 'champions' AND entered_at >= current_date - 7
CREATE TABLE segment_membership_history (
    segment        VARCHAR NOT NULL,
    customer_id    VARCHAR NOT NULL,
    entered_at     TIMESTAMPTZ NOT NULL,
    exited_at      TIMESTAMPTZ,
    PRIMARY KEY (segment, customer_id, entered_at)
);

-- Segment sizes per build date, with the entries and exits of that build.
CREATE TABLE segment_sizes (
    as_of          DATE NOT NULL,
    segment        VARCHAR NOT NULL,
    members        BIGINT NOT NULL,
    entered        BIGINT NOT NULL,
    exited         BIGINT NOT NULL,
    PRIMARY KEY (as_of, segment)
);

-- What sets each segment apart: the most common values of a few traits among its
-- members, against their share among all customers (lift = share / store_share).
-- For the lookalike seed these are the traits to look for in prospects.
CREATE TABLE segment_traits (
    segment        VARCHAR NOT NULL,
    trait          VARCHAR NOT NULL,          -- top_categories_bought | loyalty_tier | ...
    value          VARCHAR NOT NULL,
    members        BIGINT NOT NULL,
    share          DOUBLE NOT NULL,
    store_share    DOUBLE NOT NULL,
    lift           DOUBLE                     -- one row per (segment, trait, value)
);

-- Products bought together (same order), from the latest build: support is the share
-- of orders with both, confidence P(b | a), lift confidence / P(b).
CREATE TABLE product_affinity (
    product_id         VARCHAR NOT NULL,
    other_product_id   VARCHAR NOT NULL,
    orders_together    BIGINT NOT NULL,
    support            DOUBLE NOT NULL,
    confidence         DOUBLE NOT NULL,
    lift               DOUBLE NOT NULL        -- one row per (product_id, other_product_id)
);

-- Next products to offer each buyer: what their purchases are most often bought with,
-- minus what they already bought (cross-sell / upsell).
CREATE TABLE customer_recommendations (
    customer_id           VARCHAR NOT NULL,   -- one row per customer
    recommended_products  VARCHAR[] NOT NULL
);

-- Consent per customer and channel (email, sms, push, ads): the latest choice the
-- customer's identify traits stated, with when they stated it.
CREATE TABLE customer_consent (
    customer_id    VARCHAR NOT NULL,
    channel        VARCHAR NOT NULL,
    granted        BOOLEAN NOT NULL,
    stated_at      TIMESTAMPTZ NOT NULL,
    event_id       VARCHAR NOT NULL           -- one row per (customer_id, channel)
);

CREATE SEQUENCE export_run_ids START 1;

-- One row per segment and destination per export run.
CREATE TABLE export_runs (
    export_run_id  BIGINT PRIMARY KEY DEFAULT nextval('export_run_ids'),
    destination    VARCHAR NOT NULL,
    segment        VARCHAR NOT NULL,
    as_of          DATE NOT NULL,
    started_at     TIMESTAMPTZ NOT NULL,
    finished_at    TIMESTAMPTZ,
    status         VARCHAR NOT NULL,          -- running | succeeded | failed
    scope          VARCHAR NOT NULL DEFAULT 'all',  -- all | forget (exits of one customer)
    members        BIGINT,
    entered        BIGINT,
    exited         BIGINT,
    location       VARCHAR,                   -- folder, topic or URL
    message        VARCHAR
);

-- What each destination has confirmed it holds, per segment: the base of the next
-- diff. A row is added when the destination confirmed the customer's entry and
-- removed when it confirmed the exit. Identifiers are kept only as SHA-256, enough
-- to remove the customer from an ad audience after they were forgotten.
CREATE TABLE export_state (
    destination    VARCHAR NOT NULL,
    segment        VARCHAR NOT NULL,
    customer_id    VARCHAR NOT NULL,
    email_sha256   VARCHAR,
    phone_sha256   VARCHAR,
    exported_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (destination, segment, customer_id)
);

-- Forgotten customers' identifiers ('email:…', 'user:…', …) as SHA-256: events that
-- carry them later are stored but never profiled again.
CREATE TABLE suppressed_identifiers (
    identifier_sha256  VARCHAR PRIMARY KEY,
    suppressed_at      TIMESTAMPTZ NOT NULL,
    reason             VARCHAR NOT NULL
);
