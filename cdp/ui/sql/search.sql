-- Customers whose identifiers match a search exactly, in every way identity
-- resolution would have stored the text (as a user id, an anonymous id, an email, a
-- phone, each normalized by the build's own macros), or who are that customer id or
-- were merged away under it. Parameters: $q (trimmed), $email, $phone (the macros'
-- results, computed first so the lookups compare constants).
SELECT customer_id, identifier AS matched
FROM customer_identities
WHERE identifier IN ('user:' || $q, 'anon:' || $q, 'email:' || $email, 'phone:' || $phone)
UNION
SELECT customer_id, 'customer id' FROM customer_profiles WHERE customer_id = $q
UNION
SELECT customer_id, 'merged-away id ' || alias_id FROM customer_aliases WHERE alias_id = $q
