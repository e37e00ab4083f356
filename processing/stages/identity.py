"""Identity resolution: one ``customer_id`` across anonymous ids, user ids, emails, phones.

Every event links the identifiers it carries (its anonymous id, user id, and the
email and phone of identify traits or order properties). Customers are the
connected components of that graph, found in DuckDB SQL by label propagation with
pointer jumping (each round also adopts the label's own label), so chains like
A–B, B–C, C–D converge in a few whole-table rounds whatever order they arrived in.
Most stores' graphs settle after the first round (a person's identifiers meet in
one event), so rounds are cheap where they can be: the first is a grouping of the
edges alone, and whether to go on is decided by a check of the edges rather than a
whole further round that changes nothing.

Segment's ``alias`` call links one more identifier, carried only in its payload:
``previousId``, the id the person was known by before the event's ``userId`` (see
``_ALIASES`` for which namespace it is linked in).

Ids are stable across rebuilds: ``customer_identities`` remembers every
identifier's customer. A component takes the id its identifiers already had; a new
component gets ``cus_`` + a hash of its smallest identifier (so a rebuild from
scratch gives the same ids); when a new link merges customers, the one first seen
earliest survives (ties: the smaller id) and the others become aliases in
``customer_aliases``, which always point at a surviving id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb

from cdp.storage.database import execute_script
from cdp.storage.event_store import TRIM_PARAMETERS
from cdp.storage.sql import read_sql

# This stage's longer statements are .sql files beside this module: identity_tuples.sql,
# identity_customer_ids.sql and identity_apply.sql.
_PACKAGE = "cdp.processing.stages"

MAX_ROUNDS = 64

# What validation strips from identifiers (pydantic's strip_whitespace), which the
# stored payload still carries.
WHITESPACE = TRIM_PARAMETERS["whitespace"]

# Segment's alias call: previousId is whatever id the person was known by before the
# event's userId — usually the anonymousId of a device, sometimes an earlier userId —
# and the call does not say which. It is linked in the namespace events already use
# for it: as 'anon:<id>' if an event carried it as an anonymous id, as 'user:<id>' if
# as a user id (both, if both), and not at all if no event up to as_of carried it.
# Why not always as both: the unused one would be an identifier no event carries,
# published all the same (a visitor's anonymous id would become the profile's user_id
# when it sorts first) and kept in customer_identities. Why not only 'anon:': an
# alias from an earlier user id would merge nothing. And linking nothing loses
# nothing: an id no event carried has no events to merge, and every build looks it up
# again, so the link is made once its events arrive.
# Only alias events' payloads are read (few rows); previousId is read as validation
# read it: 'previous_id' first, then 'previousId', stripped of Unicode whitespace.
# An alias naming a forgotten identifier (previousId in either namespace, or the
# event's own ids) links nothing, like any event carrying one.
_ALIASES = """
CREATE OR REPLACE TEMP TABLE identity_alias_candidates AS
WITH aliases AS (
    SELECT occurred_at, anonymous_id, user_id,
           trim(coalesce(payload ->> 'previous_id', payload ->> 'previousId'), $whitespace)
               AS named_id
    FROM counted_events WHERE type = 'alias' AND occurred_at <= $as_of
)
SELECT occurred_at, unnest(['anon:' || named_id, 'user:' || named_id]) AS previous,
       coalesce('user:' || user_id, 'anon:' || anonymous_id) AS target
FROM aliases
WHERE NOT EXISTS (
    SELECT 1 FROM suppressed_identifiers
    WHERE list_contains([sha256('anon:' || named_id), sha256('user:' || named_id),
                         sha256('anon:' || anonymous_id), sha256('user:' || user_id)],
                        identifier_sha256)
);
"""

# Only when there are aliases: it reads every identifier of the build.
_ALIAS_LINKS = """
INSERT INTO tuple_identifiers BY NAME
WITH known AS (  -- the candidates some event carried (and that are not suppressed)
    SELECT DISTINCT identifier FROM tuple_identifiers
    WHERE identifier IN (SELECT previous FROM identity_alias_candidates)
)
SELECT unnest([a.previous, a.target]) AS identifier, least(a.previous, a.target) AS anchor,
       a.occurred_at AS first_seen_at
FROM identity_alias_candidates a JOIN known k ON k.identifier = a.previous
WHERE a.previous <> a.target;
"""

_GRAPH = """
CREATE OR REPLACE TEMP TABLE identity_nodes AS
SELECT identifier, min(first_seen_at) AS first_seen_at FROM tuple_identifiers GROUP BY 1;

CREATE OR REPLACE TEMP TABLE identity_edges AS
SELECT DISTINCT identifier AS source, anchor AS target
FROM tuple_identifiers WHERE identifier <> anchor;

-- The first round. Every edge points at a smaller identifier (its tuple's anchor),
-- so starting from "each identifier is its own label", a round offers an identifier
-- only its edges' targets, and pointer jumping has nothing to jump to yet.
CREATE OR REPLACE TEMP TABLE identity_labels AS
WITH nearest AS (SELECT source AS identifier, min(target) AS label FROM identity_edges GROUP BY 1)
SELECT n.identifier, coalesce(s.label, n.identifier) AS label
FROM identity_nodes n LEFT JOIN nearest s USING (identifier);
"""

_PROPAGATE = """
CREATE OR REPLACE TEMP TABLE identity_labels_next AS
WITH offered AS (
    SELECT identifier, label FROM identity_labels
    UNION ALL
    SELECT e.source, l.label FROM identity_edges e JOIN identity_labels l ON l.identifier = e.target
    UNION ALL
    SELECT e.target, l.label FROM identity_edges e JOIN identity_labels l ON l.identifier = e.source
),
smallest AS (SELECT identifier, min(label) AS label FROM offered GROUP BY 1)
-- Pointer jumping: also take the label's own current label.
SELECT s.identifier, least(s.label, coalesce(j.label, s.label)) AS label
FROM smallest s LEFT JOIN identity_labels j ON j.identifier = s.label
"""

# Settled when no edge joins two labels: then each component has one label, and as
# labels only ever fall to an identifier of their own component, it is the smallest.
# (Half the cost of a round, which would have to change nothing to say the same.)
_UNSETTLED = """
SELECT EXISTS (
    SELECT 1 FROM identity_edges e
    JOIN identity_labels s ON s.identifier = e.source
    JOIN identity_labels t ON t.identifier = e.target
    WHERE s.label <> t.label
)
"""

# How an email or phone becomes an identifier (after its 'email:' / 'phone:' prefix):
# NULL when it cannot be one. The one home of this rule: the build's identity tuples
# use it, and so does ``cdp ui``'s search (``NORMALIZE_MACROS`` on its connection).
NORMALIZE_MACROS = r"""
CREATE OR REPLACE TEMP MACRO cdp_normalize_phone(phone) AS
    CASE WHEN starts_with(trim(phone), '+') THEN '+' ELSE '' END
    || regexp_replace(phone, '[^0-9]', '', 'g');

CREATE OR REPLACE TEMP MACRO cdp_identity_email(email) AS
    CASE WHEN contains(email, '@') THEN lower(trim(email)) END;

CREATE OR REPLACE TEMP MACRO cdp_identity_phone(phone) AS
    CASE WHEN length(regexp_replace(phone, '[^0-9]', '', 'g')) >= 7
         THEN cdp_normalize_phone(phone) END;
"""


@dataclass(frozen=True)
class IdentityReport:
    identifiers: int
    customers: int
    merges: int
    rounds: int


def resolve_identities(con: duckdb.DuckDBPyConnection, as_of: datetime) -> IdentityReport:
    """Stitch identifiers seen up to ``as_of`` into customers, staged in the temp
    tables ``build_identities`` and ``identity_merges``; ``apply_identities`` records
    them. Needs ``build_order_payloads`` (``payloads.parse_order_payloads``).
    Every event carries an anonymous or user id, so the rest of the build finds
    an event's customer through either."""
    execute_script(con, NORMALIZE_MACROS)
    execute_script(con, read_sql(_PACKAGE, "identity_tuples.sql"), {"as_of": as_of})
    execute_script(con, _ALIASES, {"as_of": as_of, "whitespace": WHITESPACE})
    if con.execute("SELECT count(*) FROM identity_alias_candidates").fetchall()[0][0]:
        execute_script(con, _ALIAS_LINKS)
    execute_script(con, _GRAPH)  # and the first round
    rounds = 1
    while con.execute(_UNSETTLED).fetchall()[0][0]:
        if rounds == MAX_ROUNDS:  # pragma: no cover - would need a chain longer than 2**64
            raise RuntimeError(f"identity labels did not settle in {MAX_ROUNDS} rounds")
        rounds += 1
        con.execute(_PROPAGATE)
        con.execute("DROP TABLE identity_labels")
        con.execute("ALTER TABLE identity_labels_next RENAME TO identity_labels")
    execute_script(con, read_sql(_PACKAGE, "identity_customer_ids.sql"))
    identifiers, customers = con.execute(
        "SELECT (SELECT count(*) FROM identity_known), (SELECT count(*) FROM identity_components)"
    ).fetchall()[0]
    merges = con.execute("SELECT count(*) FROM identity_merges").fetchall()[0][0]
    return IdentityReport(int(identifiers), int(customers), int(merges), rounds)


def apply_identities(con: duckdb.DuckDBPyConnection, now: datetime) -> None:
    """Record the staged identities and merges (inside the build's publish transaction)."""
    execute_script(con, read_sql(_PACKAGE, "identity_apply.sql"), {"now": now})


def resolve_customer_id(con: duckdb.DuckDBPyConnection, customer_or_alias: str) -> str | None:
    """The current id of a customer, following an alias if it was merged away."""
    row = con.execute(
        "SELECT coalesce((SELECT customer_id FROM customer_aliases WHERE alias_id = $id),"
        " (SELECT DISTINCT customer_id FROM customer_identities WHERE customer_id = $id))",
        {"id": customer_or_alias},
    ).fetchall()[0]
    return row[0] if row else None
