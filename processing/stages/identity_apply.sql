-- Records the build's identities and merges, inside the build's publish transaction:
-- writes customer_aliases and customer_identities (only new or changed identifiers).
--
-- Makes the temp table identity_changes.
-- Reads temp tables: identity_merges, build_identities (identity_customer_ids.sql).
-- Parameters: $now (merged_at of new aliases).

-- Aliases of a merged-away id follow it to the survivor.
UPDATE customer_aliases a SET customer_id = m.customer_id
FROM identity_merges m WHERE a.customer_id = m.alias_id;

INSERT OR REPLACE INTO customer_aliases (alias_id, customer_id, merged_at)
SELECT alias_id, customer_id, $now FROM identity_merges;

-- Only identifiers that are new or changed are written: most are neither.
CREATE OR REPLACE TEMP TABLE identity_changes AS
SELECT b.identifier, b.customer_id, b.first_seen_at
FROM build_identities b LEFT JOIN customer_identities old USING (identifier)
WHERE old.identifier IS NULL OR old.customer_id <> b.customer_id
   OR old.first_seen_at <> b.first_seen_at;

DELETE FROM customer_identities
WHERE identifier IN (SELECT identifier FROM identity_changes);

INSERT INTO customer_identities (identifier, customer_id, first_seen_at)
SELECT identifier, customer_id, first_seen_at FROM identity_changes;

-- Identifiers of merged-away customers that this (possibly earlier as-of) build did
-- not see still follow their customer.
UPDATE customer_identities i SET customer_id = m.customer_id
FROM identity_merges m WHERE i.customer_id = m.alias_id;
