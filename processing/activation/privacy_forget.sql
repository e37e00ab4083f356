-- Forgets a customer, inside one transaction (privacy.forget_customer): records
-- their identifiers' SHA-256 in suppressed_identifiers, and deletes their events,
-- profile, rolling windows, orders, history, consent, recommendations, segment
-- memberships (current and history), identities and aliases.
--
-- Makes the temp table forget_events (the deleted events' ids, counted afterwards).
-- Reads: forget_identifiers (every identifier the customer had) and
-- forget_customers (their id and merged-away ids), registered by forget_customer.
-- Parameters: $now (suppressed_at).

INSERT OR IGNORE INTO suppressed_identifiers
SELECT sha256(identifier), $now, 'cdp forget' FROM forget_identifiers;

CREATE OR REPLACE TEMP TABLE forget_events AS
SELECT event_id FROM events
WHERE anonymous_id IN (SELECT identifier[6:] FROM forget_identifiers
                       WHERE starts_with(identifier, 'anon:'))
   OR user_id IN (SELECT identifier[6:] FROM forget_identifiers
                  WHERE starts_with(identifier, 'user:'))
   OR lower(trim(email)) IN (SELECT identifier[7:] FROM forget_identifiers
                             WHERE starts_with(identifier, 'email:'));

DELETE FROM events WHERE event_id IN (SELECT event_id FROM forget_events);

DELETE FROM recent_event_ids WHERE event_id IN (SELECT event_id FROM forget_events);

DELETE FROM customer_profiles WHERE customer_id IN (SELECT customer_id FROM forget_customers);

DELETE FROM customer_rolling_windows
WHERE customer_id IN (SELECT customer_id FROM forget_customers);

DELETE FROM orders WHERE customer_id IN (SELECT customer_id FROM forget_customers);

DELETE FROM profile_history WHERE customer_id IN (SELECT customer_id FROM forget_customers);

DELETE FROM customer_consent WHERE customer_id IN (SELECT customer_id FROM forget_customers);

DELETE FROM customer_recommendations
WHERE customer_id IN (SELECT customer_id FROM forget_customers);

DELETE FROM segment_membership WHERE customer_id IN (SELECT customer_id FROM forget_customers);

DELETE FROM segment_membership_history
WHERE customer_id IN (SELECT customer_id FROM forget_customers);

DELETE FROM customer_identities WHERE customer_id IN (SELECT customer_id FROM forget_customers);

DELETE FROM customer_aliases
WHERE customer_id IN (SELECT customer_id FROM forget_customers)
   OR alias_id IN (SELECT customer_id FROM forget_customers);
