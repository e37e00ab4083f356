"""Hand-written stores for build tests: a few events, exact expectations."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb

from cdp.ingest.validation import RawMessage, validate_batch
from cdp.settings import Settings
from cdp.storage.event_store import write_batch

AS_OF = datetime(2026, 6, 30, 23, 59, 59, tzinfo=UTC)
_ids = itertools.count()


def days_ago(days: float) -> datetime:
    return AS_OF - timedelta(days=days)


def event(event_type: str, at: datetime, **fields: Any) -> dict[str, Any]:
    body = {"event_id": f"h-{next(_ids)}", "type": event_type, "timestamp": at.isoformat()}
    body.update(fields)
    return body


def order(
    user: str,
    at: datetime,
    total: str,
    order_id: str | None = None,
    currency: str = "USD",
    **props: Any,
) -> dict[str, Any]:
    order_id = order_id or f"o-{next(_ids)}"
    return event(
        "order_completed",
        at,
        user_id=user,
        properties={"order_id": order_id, "total": total, "currency": currency, **props},
    )


def store(con: duckdb.DuckDBPyConnection, *bodies: dict[str, Any]) -> None:
    offset = con.execute("SELECT count(*) FROM events").fetchall()[0][0] + 1000
    batch = validate_batch(
        [RawMessage(json.dumps(b).encode(), "test", 0, offset + n) for n, b in enumerate(bodies)]
    )
    assert batch.dead_letters.num_rows == 0, batch.dead_letters.to_pylist()
    write_batch(con, batch.events, batch.dead_letters)


def settings(**sections: dict[str, Any]) -> Settings:
    return Settings(**sections)
