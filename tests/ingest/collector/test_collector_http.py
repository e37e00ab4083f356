"""`cdp collect` as SDKs meet it: a real process, real HTTP, a real broker, then `cdp ingest`."""

from __future__ import annotations

import base64
import gzip
import json
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import duckdb
import pytest

from tests.ingest.collector.conftest import SERVER_KEY, WEB_KEY

pytestmark = pytest.mark.kafka


def post(
    url: str,
    body: bytes | dict,
    *,
    key: str | None = SERVER_KEY,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict, dict]:
    """(status, JSON body, headers) of one POST."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST")
    request.add_header("Content-Type", "application/json")
    if key is not None:
        request.add_header(
            "Authorization", "Basic " + base64.b64encode(f"{key}:".encode()).decode()
        )
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read() or b"{}"), dict(answer.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}"), dict(error.headers)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def stored(collector, sql: str) -> list[tuple]:
    with duckdb.connect(str(collector.settings.storage.db_path), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_a_mixed_batch_is_acknowledged_and_ingest_stores_each_event_with_its_type_and_source(
    collector_factory,
):
    collector = collector_factory()
    now = _iso(datetime.now(UTC))
    batch = {
        "batch": [
            {
                "type": "track",
                "event": "Order Completed",
                "messageId": "m-order",
                "userId": "u-1",
                "timestamp": now,
                "properties": {"order_id": "o-1", "total": 30, "currency": "EUR"},
            },
            {
                "type": "identify",
                "messageId": "m-identify",
                "userId": "u-1",
                "timestamp": now,
                "context": {"traits": {"email": "ann@example.com"}},
            },
            {
                "type": "page",
                "messageId": "m-page",
                "anonymousId": "a-1",
                "timestamp": now,
                "properties": {"url": "https://shop.test/"},
            },
            {
                "type": "screen",
                "messageId": "m-screen",
                "anonymousId": "a-1",
                "timestamp": now,
                "name": "Home",
            },
            {
                "type": "alias",
                "messageId": "m-alias",
                "previousId": "a-1",
                "userId": "u-1",
                "timestamp": now,
            },
            {
                "type": "group",
                "messageId": "m-group",
                "userId": "u-1",
                "groupId": "acct-1",
                "timestamp": now,
            },
        ],
        "context": {"library": {"name": "test", "version": "1"}},
        "sentAt": now,
    }
    status, answer, _ = post(f"{collector.url}/v1/batch", batch)
    assert (status, answer) == (200, {"success": True})
    collector.ingest()
    rows = stored(
        collector,
        "SELECT event_id, type, family, user_id, anonymous_id, email, "
        "payload->>'$.context.source', payload->>'$.context.library.name' "
        "FROM events ORDER BY event_id",
    )
    assert rows == [
        ("m-alias", "alias", "identify", "u-1", None, None, "backend", "test"),
        ("m-group", "group", "identify", "u-1", None, None, "backend", "test"),
        ("m-identify", "identify", "identify", "u-1", None, "ann@example.com", "backend", "test"),
        ("m-order", "order_completed", "purchase", "u-1", None, None, "backend", "test"),
        ("m-page", "page_viewed", "browse", None, "a-1", None, "backend", "test"),
        ("m-screen", "screen_viewed", "browse", None, "a-1", None, "backend", "test"),
    ]
