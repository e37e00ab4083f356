"""Builders for test events and for reading back what ingest stored."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import duckdb

from cdp.ingest.events import FAMILY_OF_TYPE

_REQUIRED = {
    "product_viewed": {"product_id": "p-1", "price": "19.99", "currency": "EUR"},
    "product_list_viewed": {"category": "cakes"},
    "products_searched": {"query": "chocolate"},
    "page_viewed": {"url": "https://shop.example/"},
    "screen_viewed": {"name": "Home"},
    "product_added": {"product_id": "p-1", "price": "19.99", "quantity": 2, "cart_id": "c-1"},
    "product_removed": {"product_id": "p-1", "cart_id": "c-1"},
    "cart_viewed": {"cart_id": "c-1"},
    "checkout_started": {"cart_id": "c-1"},
    "order_completed": {"order_id": "o-1", "total": "39.98", "currency": "EUR"},
    "order_refunded": {"order_id": "o-1", "total": "39.98", "currency": "EUR"},
    "order_cancelled": {"order_id": "o-1"},
}


def event(event_type: str, event_id: str, **overrides: Any) -> dict[str, Any]:
    """A valid canonical event of the given type."""
    body: dict[str, Any] = {
        "event_id": event_id,
        "type": event_type,
        "timestamp": "2026-03-01T12:00:00+01:00",
        "anonymous_id": "anon-1",
        "user_id": "user-1",
        "context": {"channel": "web", "campaign": {"source": "google", "medium": "cpc"}},
    }
    if event_type == "identify":
        body["traits"] = {"email": "Ann@Example.com", "consent": {"email": True}}
    elif event_type == "alias":
        body["previousId"] = "anon-1"
    elif event_type == "group":
        body["groupId"] = "account-1"
        body["traits"] = {"name": "Bakery Ltd"}
    else:
        body["properties"] = dict(_REQUIRED[event_type])
    body.update(overrides)
    return body


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


def one_of_each_type() -> list[dict[str, Any]]:
    return [event(name, f"evt-{name}") for name in FAMILY_OF_TYPE]


def offsets_accounted(con: duckdb.DuckDBPyConnection) -> list[tuple[str, int, int, int]]:
    """Per partition: (topic, partition, rows found, distinct offsets found) across the
    three tables an offset can end up in."""
    return con.execute(
        """
        SELECT source_topic, source_partition, count(*), count(DISTINCT source_offset)
        FROM (
            SELECT source_topic, source_partition, source_offset FROM events
            UNION ALL
            SELECT source_topic, source_partition, source_offset FROM dead_letters
            UNION ALL
            SELECT source_topic, source_partition, source_offset FROM duplicate_events
        )
        GROUP BY ALL ORDER BY ALL
        """
    ).fetchall()


def stored_next_offsets(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, int], int]:
    """``consumer_offsets`` as {(topic, partition): next offset to read}."""
    rows = con.execute("SELECT topic, partition, next_offset FROM consumer_offsets").fetchall()
    return {(topic, partition): offset for topic, partition, offset in rows}


def validator_process_of(pid: int) -> int | None:
    """The validator process a cdp process ``pid`` started, if it has: its child that
    is not multiprocessing's resource tracker (Linux, through /proc)."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    for child in found.stdout.split():
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        if b"resource_tracker" not in cmdline:
            return int(child)
    return None
