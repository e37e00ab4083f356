"""Every query the UI runs, on a cursor of the analyst snapshot.

Values are always bound parameters; the only text put into SQL is an ORDER BY column
chosen from a fixed list by key. Rows come back as dicts for the templates. Lookups
compare a sorted column with constants, so DuckDB's zone maps skip all but the row
group that holds them (the analyst publish sorts those tables: ``storage.analyst``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import duckdb

from cdp.storage.event_store import TRIM_PARAMETERS
from cdp.storage.sql import read_sql

_PACKAGE = "cdp.ui"
Row = dict[str, Any]

# What validation strips from identifiers before they are stored.
_WHITESPACE = TRIM_PARAMETERS["whitespace"]
_KINDS = ("email", "phone", "user", "anon")
MAX_QUERY_CHARS = 320  # longer than any identifier cdp stores (an email is at most 254)
FAMILIES = ("browse", "cart", "purchase", "identify")

# Sortable columns of a segment's members: key in the URL -> expression.
MEMBER_SORTS = {
    "historic_clv": "historic_clv",
    "predicted_clv": "predicted_clv",
    "p_alive": "p_alive",
    "orders": "orders",
    "recency": "days_since_last_order",
    "entered": "entered_at",
    "customer": "customer_id",
}


MEMBER_COLUMNS = (
    "customer_id", "user_id", "email", "entered_at", "rfm_segment", "loyalty_tier", "orders",
    "historic_clv", "predicted_clv", "p_alive", "days_since_last_order", "traits",
)  # fmt: skip


def _rows(cursor: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> list[Row]:
    result = cursor.execute(sql, params)
    names = [column[0] for column in result.description]
    return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


def _one(cursor: duckdb.DuckDBPyConnection, sql: str, params: dict[str, Any]) -> Row | None:
    rows = _rows(cursor, sql, params)
    return rows[0] if rows else None


@dataclass(frozen=True)
class SearchResult:
    query: str
    exact: list[Row]  # customer_id, matched
    by_prefix: list[Row]  # customer_id, email


def clean_query(text: str) -> str:
    """The search text as identity resolution stores identifiers: stripped of the
    whitespace validation strips; a leading ``email:``, ``user:``... only says what
    it is, and is dropped (every kind is tried)."""
    text = text.strip(_WHITESPACE)
    kind, sep, value = text.partition(":")
    if sep and kind.lower() in _KINDS:
        text = value.strip(_WHITESPACE)
    return text


def search(cursor: duckdb.DuckDBPyConnection, text: str, limit: int) -> SearchResult:
    """Exact matches of every identifier kind, customer ids and merged-away ids; and
    customers with an email starting with the text (normalized as emails are)."""
    q = clean_query(text)
    if not q:
        return SearchResult(q, [], [])
    # The prefix lower-cased by DuckDB, as the build lower-cases emails (Python's
    # lower() differs for a few letters: 'İ', a final 'Σ').
    email, phone, lowered = cursor.execute(
        "SELECT cdp_identity_email($q), cdp_identity_phone($q), lower($q)", {"q": q}
    ).fetchall()[0]
    exact = _rows(
        cursor,
        read_sql(_PACKAGE, "sql/search.sql"),
        {"q": q, "email": email or "", "phone": phone or ""},
    )
    exact.sort(key=lambda row: (row["customer_id"], row["matched"]))
    prefix = "email:" + lowered
    # A range on the sorted column, not LIKE: the prefix is data, never a pattern.
    by_prefix = _rows(
        cursor,
        "SELECT customer_id, identifier[7:] AS email FROM customer_identities "
        "WHERE identifier >= $low AND identifier < $high ORDER BY identifier LIMIT $limit",
        {"low": prefix, "high": prefix + "\U0010ffff", "limit": limit},
    )
    return SearchResult(q, exact, by_prefix)


def surviving_id(cursor: duckdb.DuckDBPyConnection, alias: str) -> str | None:
    row = _one(
        cursor, "SELECT customer_id FROM customer_aliases WHERE alias_id = $id", {"id": alias}
    )
    return row["customer_id"] if row else None


@dataclass
class Customer:
    profile: Row
    identifiers: list[Row]
    aliases: list[Row]
    models: list[Row]
    consent: list[Row]
    segments: list[Row]
    recommendations: list[str]
    windows: list[Row]
    orders: list[Row]


def customer(cursor: duckdb.DuckDBPyConnection, customer_id: str) -> Customer | None:
    """Everything the snapshot knows about one customer, or None."""
    param = {"id": customer_id}
    profile = _one(cursor, "SELECT * FROM customer_profiles WHERE customer_id = $id", param)
    if profile is None:
        return None
    recommended = _one(
        cursor,
        "SELECT recommended_products FROM customer_recommendations WHERE customer_id = $id",
        param,
    )
    return Customer(
        profile=profile,
        identifiers=_rows(
            cursor,
            "SELECT identifier, first_seen_at FROM customer_identities_by_customer "
            "WHERE customer_id = $id ORDER BY identifier",
            param,
        ),
        aliases=_rows(
            cursor,
            "SELECT alias_id, merged_at FROM customer_aliases WHERE customer_id = $id "
            "ORDER BY merged_at",
            param,
        ),
        models=_rows(
            cursor,
            "SELECT * FROM clv_model_runs WHERE as_of = (SELECT max(as_of) FROM clv_model_runs "
            "WHERE as_of <= timezone('UTC', $as_of)::DATE) ORDER BY model",
            {"as_of": profile["as_of"]},
        ),
        consent=_rows(
            cursor,
            "SELECT channel, granted, stated_at, event_id FROM customer_consent "
            "WHERE customer_id = $id ORDER BY channel",
            param,
        ),
        segments=_rows(
            cursor,
            "SELECT segment, entered_at, exited_at FROM segment_membership_history "
            "WHERE customer_id = $id ORDER BY exited_at IS NOT NULL, entered_at DESC, segment",
            param,
        ),
        recommendations=list(recommended["recommended_products"] or []) if recommended else [],
        windows=_rows(
            cursor,
            "SELECT * EXCLUDE (customer_id) FROM customer_rolling_windows "
            "WHERE customer_id = $id ORDER BY window_days",
            param,
        ),
        orders=_rows(
            cursor,
            "SELECT order_id, ordered_at, gross, refunded, cancelled, units, product_ids "
            "FROM orders WHERE customer_id = $id ORDER BY ordered_at DESC LIMIT 200",
            param,
        ),
    )


def timeline(
    cursor: duckdb.DuckDBPyConnection,
    customer_id: str,
    family: str | None,
    page: int,
    page_size: int,
) -> tuple[list[Row], int]:
    """One page of a customer's events, newest first, and how many there are."""
    params = {"id": customer_id, "family": family}
    where = "customer_id = $id AND ($family IS NULL OR family = $family)"
    total = cursor.execute(
        f"SELECT count(*) FROM customer_events WHERE {where}", params
    ).fetchall()[0][0]
    rows = _rows(
        cursor,
        f"SELECT * EXCLUDE (customer_id) FROM customer_events WHERE {where} "
        "ORDER BY occurred_at DESC, event_id LIMIT $limit OFFSET $offset",
        {**params, "limit": page_size, "offset": (page - 1) * page_size},
    )
    return rows, int(total)


def segment_overview(cursor: duckdb.DuckDBPyConnection) -> dict[str, Row]:
    """Per segment: current members and the members at each build date."""
    rows = _rows(
        cursor,
        "SELECT segment, list(members ORDER BY as_of) AS trend, "
        "list(as_of ORDER BY as_of) AS dates, arg_max(members, as_of) AS members "
        "FROM segment_sizes GROUP BY segment",
        {},
    )
    return {row["segment"]: row for row in rows}


def latest_as_of(cursor: duckdb.DuckDBPyConnection) -> Any:
    return cursor.execute("SELECT max(as_of) FROM segment_membership").fetchall()[0][0]


CHANGES_LISTED = 200


def segment_changes(cursor: duckdb.DuckDBPyConnection, segment: str) -> dict[str, Any]:
    """Who entered and who exited in the 7 days up to the latest build: how many
    (``entered_count``...) and the latest ``CHANGES_LISTED`` of each."""
    as_of = latest_as_of(cursor)
    changes: dict[str, Any] = {"entered": [], "exited": [], "entered_count": 0, "exited_count": 0}
    if as_of is None:
        return changes
    since = as_of - timedelta(days=7)
    for change in ("entered", "exited"):  # column names from this fixed pair
        where = f"FROM segment_membership_history WHERE segment = $segment AND {change}_at > $since"
        params = {"segment": segment, "since": since}
        changes[change] = _rows(
            cursor,
            f"SELECT customer_id, {change}_at AS at {where} "
            f"ORDER BY {change}_at DESC, customer_id LIMIT {CHANGES_LISTED}",
            params,
        )
        changes[f"{change}_count"] = _one(cursor, f"SELECT count(*) AS n {where}", params)["n"]
    return changes


def members(
    cursor: duckdb.DuckDBPyConnection,
    segment: str,
    *,
    rfm: str | None,
    tier: str | None,
    sort: str,
    descending: bool,
    limit: int | None,
    offset: int = 0,
) -> tuple[list[Row], int]:
    """A page of a segment's members (all of them with ``limit`` None), and how many
    match the filter. ``sort`` must be a key of ``MEMBER_SORTS``."""
    base = read_sql(_PACKAGE, "sql/members.sql")
    params: dict[str, Any] = {"segment": segment, "rfm": rfm, "tier": tier}
    total = cursor.execute(f"SELECT count(*) FROM ({base})", params).fetchall()[0][0]
    direction = "DESC NULLS LAST" if descending else "ASC NULLS LAST"
    sql = f"{base} ORDER BY {MEMBER_SORTS[sort]} {direction}, customer_id"
    if limit is not None:
        sql += " LIMIT $limit OFFSET $offset"
        params |= {"limit": limit, "offset": offset}
    return _rows(cursor, sql, params), int(total)


def member_filters(cursor: duckdb.DuckDBPyConnection, segment: str) -> dict[str, list[str]]:
    """The RFM segments and loyalty tiers present among a segment's members."""
    row = cursor.execute(
        "SELECT list(DISTINCT rfm_segment ORDER BY rfm_segment) FILTER (rfm_segment "
        "IS NOT NULL), list(DISTINCT loyalty_tier ORDER BY loyalty_tier) FILTER "
        "(loyalty_tier IS NOT NULL) FROM segment_members WHERE segment = $segment",
        {"segment": segment},
    ).fetchall()[0]
    return {"rfm": row[0] or [], "tier": row[1] or []}


def segment_traits(cursor: duckdb.DuckDBPyConnection, segment: str) -> list[Row]:
    return _rows(
        cursor,
        "SELECT trait, value, members, share, store_share, lift FROM segment_traits "
        "WHERE segment = $segment ORDER BY lift DESC NULLS LAST, members DESC LIMIT 30",
        {"segment": segment},
    )


def operations(cursor: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Recent builds and exports with their outcomes; dead letters with reasons."""
    return {
        "publish": _one(cursor, "SELECT * FROM publish_info", {}),
        "builds": _rows(cursor, "SELECT * FROM builds ORDER BY build_id DESC LIMIT 20", {}),
        "exports": _rows(
            cursor, "SELECT * FROM export_runs ORDER BY export_run_id DESC LIMIT 50", {}
        ),
        "dead_letter_kinds": _rows(
            cursor,
            "SELECT error_kind, count(*) AS letters, max(received_at) AS latest "
            "FROM dead_letters GROUP BY 1 ORDER BY 2 DESC",
            {},
        ),
        "dead_letters": _rows(
            cursor,
            "SELECT dead_letter_id, source_topic, source_partition, source_offset, "
            "error_kind, reason, received_at FROM dead_letters "
            "ORDER BY dead_letter_id DESC LIMIT 50",
            {},
        ),
    }
