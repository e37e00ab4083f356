-- Profile build tables. Analysts rely on these names: change them only through a new
-- migration. Monetary columns are in the reporting currency (config: money).

-- Every identifier ever seen, and the customer it belongs to. Kept across builds so
-- that a customer keeps their id; identifiers are 'anon:…', 'user:…', 'email:…'
-- (trimmed, lower-case) and 'phone:…' (digits, with '+' when the store sent one).
CREATE TABLE customer_identities (
    identifier     VARCHAR PRIMARY KEY,
    customer_id    VARCHAR NOT NULL,
    first_seen_at  TIMESTAMPTZ NOT NULL
);

-- When a new link merges two customers, the younger id becomes an alias of the older.
CREATE TABLE customer_aliases (
    alias_id       VARCHAR PRIMARY KEY,
    customer_id    VARCHAR NOT NULL,
    merged_at      TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
);

CREATE SEQUENCE build_ids START 1;

-- One row per build: when, for which as-of date, how long it took, how it ended.
CREATE TABLE builds (
    build_id       BIGINT PRIMARY KEY DEFAULT nextval('build_ids'),
    as_of          TIMESTAMPTZ NOT NULL,
    started_at     TIMESTAMPTZ NOT NULL,
    finished_at    TIMESTAMPTZ,
    status         VARCHAR NOT NULL,          -- running | succeeded | failed
    customers      BIGINT,
    message        VARCHAR
);

-- The current profile of every customer (replaced by every build).
CREATE TABLE customer_profiles (
    customer_id              VARCHAR PRIMARY KEY,
    as_of                    TIMESTAMPTZ NOT NULL,
    user_id                  VARCHAR,
    anonymous_ids            VARCHAR[],
    emails                   VARCHAR[],
    phones                   VARCHAR[],
    first_seen_at            TIMESTAMPTZ,
    last_seen_at             TIMESTAMPTZ,
    first_order_at           TIMESTAMPTZ,
    last_order_at            TIMESTAMPTZ,
    orders                   BIGINT NOT NULL,
    units                    BIGINT NOT NULL,
    gross_revenue            DECIMAL(18, 4) NOT NULL,
    refunded                 DECIMAL(18, 4) NOT NULL,
    net_revenue              DECIMAL(18, 4) NOT NULL,
    aov                      DECIMAL(18, 4),
    purchase_frequency       DOUBLE,          -- orders per year over the KPI window
    tenure_days              INTEGER,
    days_since_last_order    INTEGER,
    mean_days_between_orders DOUBLE,
    top_categories_viewed    VARCHAR[],
    top_products_viewed      VARCHAR[],
    top_categories_bought    VARCHAR[],
    top_products_bought      VARCHAR[],
    open_cart_value          DECIMAL(18, 4),
    open_cart_age_hours      DOUBLE,
    consent_email            BOOLEAN, consent_sms BOOLEAN, consent_push BOOLEAN, consent_ads BOOLEAN,
    birthday                 DATE,
    journey_stage            VARCHAR,         -- awareness | consideration | decision | loyalty | lapsed
    loyalty_tier             VARCHAR,
    funnel_stage             VARCHAR,
    historic_clv             DECIMAL(18, 4),
    basic_clv                DOUBLE,
    advanced_clv             DOUBLE,
    predicted_clv            DOUBLE,
    p_alive                  DOUBLE,
    expected_purchases       DOUBLE,
    expected_spend_per_order DOUBLE,
    rfm_recency_days         INTEGER,
    rfm_frequency            BIGINT,
    rfm_monetary             DECIMAL(18, 4),
    rfm_recency_score        INTEGER,
    rfm_frequency_score      INTEGER,
    rfm_monetary_score       INTEGER,
    rfm_cell                 VARCHAR,
    rfm_score                INTEGER,
    rfm_segment              VARCHAR
);

-- Trailing-window activity per customer, one row per configured window
-- (clv.rolling_windows_days; 30, 90 and 365 by default), recomputed every build.
CREATE TABLE customer_rolling_windows (
    customer_id      VARCHAR NOT NULL,
    window_days      INTEGER NOT NULL,
    orders           BIGINT NOT NULL,
    net_revenue      DECIMAL(18, 4) NOT NULL,
    product_views    BIGINT NOT NULL,
    cart_adds        BIGINT NOT NULL,
    PRIMARY KEY (customer_id, window_days)
);

-- Key metrics per customer per build date: trends over time. Re-running an as-of
-- date replaces its rows.
CREATE TABLE profile_history (
    as_of            DATE NOT NULL,
    customer_id      VARCHAR NOT NULL,
    orders           BIGINT, net_revenue DECIMAL(18, 4), historic_clv DECIMAL(18, 4),
    predicted_clv    DOUBLE, p_alive DOUBLE, rfm_segment VARCHAR,
    journey_stage    VARCHAR, loyalty_tier VARCHAR,
    PRIMARY KEY (as_of, customer_id)
);

-- Store-level KPIs per build date (one row per as-of date; re-runs replace it).
CREATE TABLE store_kpis (
    as_of                  DATE PRIMARY KEY,
    window_days            INTEGER NOT NULL,
    reporting_currency     VARCHAR NOT NULL,
    customers              BIGINT, buyers BIGINT, orders BIGINT,
    revenue                DECIMAL(18, 4),
    aov                    DOUBLE,
    purchase_frequency     DOUBLE,
    customer_value         DOUBLE,
    repeat_rate            DOUBLE,
    churn_rate_monthly     DOUBLE,
    retention_rate_monthly DOUBLE,
    lifespan_years         DOUBLE,
    lifespan_is_default    BOOLEAN,
    basic_clv              DOUBLE,
    monthly_revenue_per_customer DOUBLE,
    gross_margin           DOUBLE,
    advanced_clv           DOUBLE,
    conversion_rate        DOUBLE,
    max_cost_per_click     DOUBLE,
    marketing_spend        DOUBLE,
    new_customers          BIGINT,
    cac                    DOUBLE,
    ltv_to_cac             DOUBLE,
    clv_minus_cac          DOUBLE
);

-- Predictive model fits, one row per model per build.
CREATE TABLE clv_model_runs (
    as_of            DATE NOT NULL,
    model            VARCHAR NOT NULL,        -- bgnbd | gamma_gamma
    time_unit        VARCHAR NOT NULL,        -- 'week'
    customers        BIGINT,
    r DOUBLE, alpha DOUBLE, a DOUBLE, b DOUBLE,
    p DOUBLE, q DOUBLE, gamma DOUBLE,
    log_likelihood   DOUBLE,
    converged        BOOLEAN NOT NULL,
    message          VARCHAR,
    fitted_at        TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
    PRIMARY KEY (as_of, model)
);

-- CLV summarized per RFM segment per build date.
CREATE TABLE rfm_segment_summary (
    as_of            DATE NOT NULL,
    rfm_segment      VARCHAR NOT NULL,
    customers        BIGINT,
    net_revenue      DECIMAL(18, 4),
    avg_historic_clv DOUBLE,
    avg_basic_clv    DOUBLE,
    avg_predicted_clv DOUBLE,
    PRIMARY KEY (as_of, rfm_segment)
);
