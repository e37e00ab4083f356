-- Lookup tables of the analyst snapshot, for `cdp ui` (and analysts): derived at each
-- publish from the tables copied in the same transaction, and described in the
-- data dictionary here (they have no table in the live database to carry comments).
--
-- Why a table and not a query: a customer's events are found through their
-- identifiers, and the events view (Parquet, in arrival order) would be read whole
-- for each customer page; sorted by customer, DuckDB's min/max zone maps find one
-- customer's rows in one row group.
-- The same holds for a customer's identifiers (customer_identities is sorted by
-- identifier, for search) and a segment's members with the profile columns its page
-- shows (the join with a million profiles cost more than the page's budget).
-- Reads: main.events, main.customer_identities, main.segment_membership,
-- main.customer_profiles. Writes: analyst_snapshot.customer_events,
-- customer_identities_by_customer, segment_members and their data_dictionary rows.

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

DROP TABLE IF EXISTS analyst_snapshot.customer_identities_by_customer;

CREATE TABLE analyst_snapshot.customer_identities_by_customer AS
SELECT customer_id, identifier, first_seen_at FROM main.customer_identities
ORDER BY customer_id, identifier;

DROP TABLE IF EXISTS analyst_snapshot.segment_members;

CREATE TABLE analyst_snapshot.segment_members AS
SELECT m.segment, m.customer_id, p.user_id, p.emails[1] AS email, m.entered_at,
       p.rfm_segment, p.loyalty_tier, p.orders, p.historic_clv, p.predicted_clv,
       p.p_alive, p.days_since_last_order, m.traits
FROM main.segment_membership m
JOIN main.customer_profiles p USING (customer_id)
ORDER BY m.segment, m.customer_id;

INSERT INTO analyst_snapshot.data_dictionary VALUES
    ('customer_identities_by_customer', NULL, NULL,
     'customer_identities sorted by customer (it is sorted by identifier), for '
     || 'looking up one customer''s identifiers.', 0),
    ('customer_identities_by_customer', 'customer_id', 'VARCHAR', 'The customer.', 1),
    ('customer_identities_by_customer', 'identifier', 'VARCHAR',
     'anon:..., user:..., email:... (normalized) or phone:...', 2),
    ('customer_identities_by_customer', 'first_seen_at', 'TIMESTAMP WITH TIME ZONE',
     'When it was first seen.', 3),
    ('segment_members', NULL, NULL,
     'Current segment members with the profile columns a members list shows '
     || '(segment_membership joined with customer_profiles), sorted by segment.', 0),
    ('segment_members', 'segment', 'VARCHAR', 'Segment.', 1),
    ('segment_members', 'customer_id', 'VARCHAR', 'Member.', 2),
    ('segment_members', 'user_id', 'VARCHAR', 'The customer''s (smallest) user id.', 3),
    ('segment_members', 'email', 'VARCHAR', 'The customer''s first normalized email.', 4),
    ('segment_members', 'entered_at', 'TIMESTAMP WITH TIME ZONE',
     'As-of of the build that put them in.', 5),
    ('segment_members', 'rfm_segment', 'VARCHAR', 'RFM segment.', 6),
    ('segment_members', 'loyalty_tier', 'VARCHAR', 'Loyalty tier.', 7),
    ('segment_members', 'orders', 'BIGINT', 'Orders.', 8),
    ('segment_members', 'historic_clv', 'DECIMAL(18,4)', 'Historic CLV.', 9),
    ('segment_members', 'predicted_clv', 'DOUBLE', 'Predicted CLV.', 10),
    ('segment_members', 'p_alive', 'DOUBLE', 'Probability still active (customer_profiles.p_alive).', 11),
    ('segment_members', 'days_since_last_order', 'INTEGER', 'Days since the last order.', 12),
    ('segment_members', 'traits', 'JSON', 'The segment''s export traits for this member.', 13);
