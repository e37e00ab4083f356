-- The identity graph's input: the distinct identifier tuples events carry, each
-- linking its identifiers as a star around its smallest one, its anchor (most
-- events repeat the same few identifiers, so the graph is built from these tuples,
-- not from every event).
--
-- Makes temp tables: identity_tuples (normalized identifiers and anchor per tuple;
-- tuples carrying a suppressed identifier removed), tuple_identifiers (identifier,
-- anchor, first_seen_at).
-- Reads: counted_events (run), suppressed_identifiers; the temp table build_order_payloads
-- (payloads); the macros cdp_identity_email and cdp_identity_phone (identity.py).
-- Parameters: $as_of.

CREATE OR REPLACE TEMP TABLE identity_tuples AS
WITH scoped AS (
    -- Identify traits are typed columns; orders may carry contact details in their
    -- properties too, parsed once per build into build_order_payloads. A group call's
    -- traits are its account's, not the person's: a shared billing address would merge
    -- every member of the account into one customer.
    SELECT occurred_at, anonymous_id, user_id,
           CASE WHEN type <> 'group' THEN email END AS email,
           CASE WHEN type <> 'group' THEN phone END AS phone
    FROM counted_events
    WHERE occurred_at <= $as_of AND type <> 'order_completed'
    UNION ALL
    SELECT occurred_at, anonymous_id, user_id, email, phone FROM build_order_payloads
),
as_sent AS (  -- collapse repeats first: normalizing is per distinct value, not per event
    SELECT anonymous_id, user_id, email, phone, min(occurred_at) AS first_seen_at
    FROM scoped GROUP BY ALL
),
-- Tuples that normalize alike stay separate rows: they link the same identifiers to
-- the same anchor, and grouping them again cost more than the duplicate edges.
normalized AS (
    SELECT 'anon:' || anonymous_id AS anonymous, 'user:' || user_id AS "user",
           'email:' || cdp_identity_email(email) AS email,
           'phone:' || cdp_identity_phone(phone) AS phone,
           first_seen_at
    FROM as_sent
)
SELECT *, least(anonymous, "user", email, phone) AS anchor FROM normalized;

-- Forgotten customers' identifiers are suppressed: an event carrying any of them
-- links nothing, so it is never stitched into a profile again.
DELETE FROM identity_tuples
WHERE EXISTS (SELECT 1 FROM suppressed_identifiers)
  AND list_has_any([sha256(anonymous), sha256("user"), sha256(email), sha256(phone)],
                   (SELECT list(identifier_sha256) FROM suppressed_identifiers));

CREATE OR REPLACE TEMP TABLE tuple_identifiers AS
SELECT identifier, anchor, first_seen_at FROM (
    SELECT anonymous AS identifier, anchor, first_seen_at FROM identity_tuples
    UNION ALL SELECT "user", anchor, first_seen_at FROM identity_tuples
    UNION ALL SELECT email, anchor, first_seen_at FROM identity_tuples
    UNION ALL SELECT phone, anchor, first_seen_at FROM identity_tuples
) WHERE identifier IS NOT NULL;
