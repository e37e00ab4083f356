"""What is in the database, in a few lines a person can read after a command."""

from __future__ import annotations

import duckdb

from cdp.processing.jobs.kpis import read_store_kpis


def database_summary(con: duckdb.DuckDBPyConnection) -> str:
    lines = ["events by type:"]
    rows = con.execute(
        "SELECT family, type, count(*) FROM events GROUP BY ALL ORDER BY family, type"
    ).fetchall()
    for family, event_type, count in rows:
        lines.append(f"  {family:<9} {event_type:<20} {count:>10,}")
    total = con.execute("SELECT count(*) FROM events").fetchall()[0][0]
    lines.append(f"  {'total':<30} {total:>10,}")
    customers = con.execute(
        "SELECT count(DISTINCT user_id), count(DISTINCT anonymous_id) FROM events"
    ).fetchall()[0]
    lines.append(f"identifiers seen: {customers[0]:,} user ids, {customers[1]:,} anonymous ids")
    duplicates = con.execute("SELECT count(*) FROM duplicate_events").fetchall()[0][0]
    lines.append(f"re-sent duplicates (stored once): {duplicates:,}")
    dead = con.execute(
        "SELECT error_kind, count(*), any_value(reason ORDER BY dead_letter_id) "
        "FROM dead_letters GROUP BY 1 ORDER BY 2 DESC"
    ).fetchall()
    dead_total = sum(row[1] for row in dead)
    lines.append(f"dead letters: {dead_total:,}")
    for kind, count, reason in dead:
        shown = reason if len(reason) <= 90 else reason[:87] + "..."
        lines.append(f"  {kind:<14} {count:>7,}  e.g. {shown}")
    lines.extend(_profile_summary(con))
    return "\n".join(lines)


def _profile_summary(con: duckdb.DuckDBPyConnection) -> list[str]:
    kpis = read_store_kpis(con)
    if kpis is None:
        return []
    lines = [
        f"customer profiles: {kpis.customers:,} customers, {kpis.buyers:,} bought in the last "
        f"year; AOV {kpis.aov or 0:,.2f} {kpis.reporting_currency}, "
        f"{kpis.purchase_frequency or 0:.2f} orders per buyer, "
        f"basic CLV {kpis.basic_clv or 0:,.2f}, advanced CLV {kpis.advanced_clv or 0:,.2f}"
    ]
    segments = con.execute(
        "SELECT rfm_segment, count(*) FROM customer_profiles WHERE rfm_segment IS NOT NULL"
        " GROUP BY 1 ORDER BY 2 DESC"
    ).fetchall()
    lines.append("RFM segments: " + ", ".join(f"{name} {count:,}" for name, count in segments))
    sizes = con.execute(
        "SELECT segment, count(*) FROM segment_membership GROUP BY 1 ORDER BY 2 DESC, 1"
    ).fetchall()
    if sizes:
        lines.append("segments: " + ", ".join(f"{name} {count:,}" for name, count in sizes))
    return lines
