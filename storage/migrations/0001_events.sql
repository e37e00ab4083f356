-- Ingest tables. Analysts rely on these names: change them only through a new migration.

-- One row per accepted event. Typed columns hold the common fields; `payload` keeps
-- the event exactly as the store sent it.
CREATE TABLE events (
    event_id         VARCHAR PRIMARY KEY,      -- the store's idempotency key
    type             VARCHAR NOT NULL,         -- canonical type, e.g. order_completed
    family           VARCHAR NOT NULL,         -- browse | cart | purchase | identify
    occurred_at      TIMESTAMPTZ NOT NULL,     -- event time, from `timestamp`
    user_id          VARCHAR,
    anonymous_id     VARCHAR,
    channel          VARCHAR,                  -- context.channel
    locale           VARCHAR,                  -- context.locale
    device_type      VARCHAR,                  -- context.device.type
    utm_source       VARCHAR,                  -- context.campaign.source
    utm_medium       VARCHAR,                  -- context.campaign.medium
    utm_campaign     VARCHAR,                  -- context.campaign.name
    product_id       VARCHAR,
    sku              VARCHAR,
    product_name     VARCHAR,
    category         VARCHAR,
    price            DECIMAL(18, 4),
    quantity         INTEGER,
    cart_id          VARCHAR,
    order_id         VARCHAR,
    revenue          DECIMAL(18, 4),           -- orders: properties.total, else properties.revenue
    discount         DECIMAL(18, 4),
    coupon           VARCHAR,
    currency         VARCHAR NOT NULL,         -- ISO 4217; USD when the event names none
    search_query     VARCHAR,                  -- products_searched: properties.query
    email            VARCHAR,                  -- identify: traits.email, as sent
    phone            VARCHAR,                  -- identify: traits.phone, as sent
    source_topic     VARCHAR NOT NULL,         -- Kafka topic, or 'file:PATH' for cdp load
    source_partition INTEGER NOT NULL,
    source_offset    BIGINT NOT NULL,          -- Kafka offset, or line number for files
    received_at      TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    payload          JSON NOT NULL
);

CREATE SEQUENCE dead_letter_ids START 1;

-- Every message that could not be accepted, with its raw bytes and why.
CREATE TABLE dead_letters (
    dead_letter_id   BIGINT PRIMARY KEY DEFAULT nextval('dead_letter_ids'),
    source_topic     VARCHAR NOT NULL,
    source_partition INTEGER NOT NULL,
    source_offset    BIGINT NOT NULL,
    message_key      BLOB,
    raw              BLOB NOT NULL,
    error_kind       VARCHAR NOT NULL,         -- empty | oversized | not_utf8 | invalid_json |
                                               -- unknown_type | invalid_event | wrong_topic
    reason           VARCHAR NOT NULL,
    received_at      TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    replay_attempts  INTEGER NOT NULL DEFAULT 0,
    last_replayed_at TIMESTAMPTZ,
    UNIQUE (source_topic, source_partition, source_offset)
);

-- Messages whose event_id was already stored (producer retries, replays): the event
-- is in `events` once; this records where the extra copy came from, so every
-- consumed offset is accounted for.
CREATE TABLE duplicate_events (
    event_id         VARCHAR NOT NULL,
    source_topic     VARCHAR NOT NULL,
    source_partition INTEGER NOT NULL,
    source_offset    BIGINT NOT NULL,
    received_at      TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    UNIQUE (source_topic, source_partition, source_offset)
);

-- The next offset to read per consumer group and partition, written in the same
-- transaction as the rows it covers: the source of truth for exactly-once ingest.
CREATE TABLE consumer_offsets (
    group_id         VARCHAR NOT NULL,
    topic            VARCHAR NOT NULL,
    partition        INTEGER NOT NULL,
    next_offset      BIGINT NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (group_id, topic, partition)
);
