-- Lookup tables of the analyst snapshot, for `cdp ui` (and analysts): derived at each
-- publish from the tables copied in the same transaction, and described in the
-- data dictionary here (they have no table in the live database to carry comments).
--
-- Why a table and not a query: a customer's events are found through their
-- identifiers, and the events view (Parquet, in arrival order) would be read whole
-- for each customer page; sorted by customer, DuckDB's min/max zone maps find one
-- customer's rows in one row group.
-- Reads: main.events, main.customer_identities. Writes: analyst_snapshot.customer_events
-- and its data_dictionary rows.

DROP TABLE IF EXISTS analyst_snapshot.customer_events;

CREATE TABLE analyst_snapshot.customer_events AS
SELECT i.customer_id, e.occurred_at, e.event_id, e.family, e.type, e.channel,
       e.product_id, e.product_name, e.category, e.price, e.quantity, e.cart_id,
       e.order_id, e.revenue, e.currency, e.search_query, e.utm_campaign
FROM main.events e
JOIN main.customer_identities i
  ON i.identifier = coalesce('user:' || e.user_id, 'anon:' || e.anonymous_id)
ORDER BY i.customer_id, e.occurred_at DESC, e.event_id;

INSERT INTO analyst_snapshot.data_dictionary VALUES
    ('customer_events', NULL, NULL,
     'Each customer''s events (a light copy of events, sorted by customer and newest '
     || 'first), for customer timelines. Events of identifiers no build has resolved '
     || 'yet are not in it.', 0),
    ('customer_events', 'customer_id', 'VARCHAR',
     'The customer the event belongs to (through its user id, else its anonymous id).', 1),
    ('customer_events', 'occurred_at', 'TIMESTAMP WITH TIME ZONE', 'When it happened.', 2),
    ('customer_events', 'event_id', 'VARCHAR', 'The event (events.event_id).', 3),
    ('customer_events', 'family', 'VARCHAR', 'browse | cart | purchase | identify.', 4),
    ('customer_events', 'type', 'VARCHAR', 'Canonical event type.', 5),
    ('customer_events', 'channel', 'VARCHAR', 'context.channel.', 6),
    ('customer_events', 'product_id', 'VARCHAR', 'Product of product and cart events.', 7),
    ('customer_events', 'product_name', 'VARCHAR', 'Product name when sent.', 8),
    ('customer_events', 'category', 'VARCHAR', 'Product or list category.', 9),
    ('customer_events', 'price', 'DECIMAL(18,4)', 'Unit price in the event''s currency.', 10),
    ('customer_events', 'quantity', 'INTEGER', 'Units.', 11),
    ('customer_events', 'cart_id', 'VARCHAR', 'Cart of cart and checkout events.', 12),
    ('customer_events', 'order_id', 'VARCHAR', 'Order of purchase events.', 13),
    ('customer_events', 'revenue', 'DECIMAL(18,4)',
     'Orders: total; refunds: amount refunded (event currency).', 14),
    ('customer_events', 'currency', 'VARCHAR', 'ISO 4217 currency of price and revenue.', 15),
    ('customer_events', 'search_query', 'VARCHAR', 'products_searched: the query.', 16),
    ('customer_events', 'utm_campaign', 'VARCHAR', 'Campaign name.', 17);
