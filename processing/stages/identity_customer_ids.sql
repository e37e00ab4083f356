-- Customer ids for the settled components: a component keeps the earliest-seen id
-- its identifiers already had, or gets 'cus_' + a hash of its label; the other ids
-- it had become aliases.
--
-- Makes temp tables: identity_known, identity_components, identity_merges (alias_id,
-- customer_id), build_identities (identifier, customer_id, first_seen_at).
-- Reads: customer_identities; temp tables identity_labels, identity_nodes
-- (identity.resolve_identities).
-- Parameters: none.

-- Every identifier with its label, and the customer it had before (one join, which
-- the statements below share).
CREATE OR REPLACE TEMP TABLE identity_known AS
SELECT l.identifier, l.label, n.first_seen_at,
       c.customer_id AS previous_id, c.first_seen_at AS previous_first_seen_at
FROM identity_labels l
JOIN identity_nodes n USING (identifier)
LEFT JOIN customer_identities c USING (identifier);

-- A component keeps the id of the customer, among those its identifiers had, first
-- seen earliest (ties: the smaller id).
CREATE OR REPLACE TEMP TABLE identity_components AS
SELECT label,
       coalesce(
           arg_min(previous_id, {'since': previous_first_seen_at, 'id': previous_id})
               FILTER (WHERE previous_id IS NOT NULL),
           'cus_' || substr(md5(label), 1, 16)
       ) AS customer_id
FROM identity_known GROUP BY label;

-- Merged-away ids become aliases of the survivor.
CREATE OR REPLACE TEMP TABLE identity_merges AS
SELECT DISTINCT k.previous_id AS alias_id, c.customer_id
FROM identity_known k JOIN identity_components c USING (label)
WHERE k.previous_id <> c.customer_id;

-- This build's view of every identifier it saw (applied by apply_identities).
CREATE OR REPLACE TEMP TABLE build_identities AS
SELECT k.identifier, c.customer_id,
       least(k.first_seen_at, k.previous_first_seen_at) AS first_seen_at  -- NULLs ignored
FROM identity_known k JOIN identity_components c USING (label);
