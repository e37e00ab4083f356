-- One row per order, attributed to its customer, as the latest build saw it (replaced
-- by every build that publishes current profiles, like customer_profiles; no PRIMARY
-- KEY for the same reason: see 0004). The builds already derive it from the order,
-- refund and cancellation events and the order payloads' line items; publishing it
-- spares analysts (and the report) parsing every order's JSON payload again.

CREATE TABLE orders (
    order_id     VARCHAR NOT NULL,
    customer_id  VARCHAR NOT NULL,
    ordered_at   TIMESTAMPTZ NOT NULL,
    gross        DECIMAL(18, 4),
    refunded     DECIMAL(18, 4),
    cancelled    BOOLEAN NOT NULL,
    units        BIGINT,
    product_ids  VARCHAR[],
    categories   VARCHAR[]
);
COMMENT ON TABLE orders IS 'Every completed order up to the latest build, with its customer, refunds and line items (orders in a currency without an exchange rate are left out).';
COMMENT ON COLUMN orders.order_id IS 'Order id (an order sent twice counts once: its first sending).';
COMMENT ON COLUMN orders.customer_id IS 'The customer it is attributed to (after identity resolution).';
COMMENT ON COLUMN orders.ordered_at IS 'When the order was completed.';
COMMENT ON COLUMN orders.gross IS 'Order total in the reporting currency, at the configured exchange rates.';
COMMENT ON COLUMN orders.refunded IS 'Refunded so far, in the reporting currency; the whole total if cancelled or refunded without an amount.';
COMMENT ON COLUMN orders.cancelled IS 'The order was cancelled.';
COMMENT ON COLUMN orders.units IS 'Units ordered (sum of line quantities, else the event quantity, else 1).';
COMMENT ON COLUMN orders.product_ids IS 'Product id of each line item, in order.';
COMMENT ON COLUMN orders.categories IS 'Category of each line item, in order.';
