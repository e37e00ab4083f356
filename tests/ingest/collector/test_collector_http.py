"""`cdp collect` as SDKs meet it: a real process, real HTTP, a real broker, then `cdp ingest`."""

from __future__ import annotations

import base64
import gzip
import json
import socket
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import duckdb
import pytest

from cdp.ingest.broker import free_port, start_local_broker
from cdp.ingest.topics import create_topics
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


def test_the_write_key_is_accepted_as_basic_user_with_or_without_colon_in_the_body_or_query(
    collector_factory,
):
    collector = collector_factory()
    event = {
        "type": "track",
        "event": "Product Viewed",
        "anonymousId": "a-1",
        "properties": {"product_id": "p-1"},
    }
    no_colon = {"Authorization": "Basic " + base64.b64encode(SERVER_KEY.encode()).decode()}
    answers = [
        post(f"{collector.url}/v1/track", event)[:2],
        post(f"{collector.url}/v1/track", event, key=None, headers=no_colon)[:2],
        post(f"{collector.url}/v1/track", {**event, "writeKey": SERVER_KEY}, key=None)[:2],
        post(f"{collector.url}/v1/batch", {"batch": [event], "writeKey": SERVER_KEY}, key=None)[:2],
        post(f"{collector.url}/v1/t?writeKey={SERVER_KEY}", event, key=None)[:2],
    ]
    assert answers == [(200, {"success": True})] * 5


def test_a_missing_or_unknown_write_key_is_401_naming_where_to_put_it(collector_factory):
    collector = collector_factory(workers=1)  # each worker throttles its own log
    event = {"type": "track", "event": "Product Viewed", "anonymousId": "a-1"}
    missing = post(f"{collector.url}/v1/track", event, key=None)
    unknown = post(f"{collector.url}/v1/track", event, key="wk_not_a_source_key")
    assert (missing[0], missing[1]["code"]) == (401, "unauthorized")
    assert "no write key" in missing[1]["message"]
    assert (unknown[0], unknown[1]["code"]) == (401, "unauthorized")
    assert "wk_n…" in unknown[1]["message"]
    # Logged for the operator, the key shortened; the repeat within a minute left out.
    post(f"{collector.url}/v1/track", event, key="wk_not_a_source_key")
    time.sleep(0.5)
    logged = [line for line in collector.log().splitlines() if "unknown write key" in line]
    assert len(logged) == 1 and "wk_n…" in logged[0] and "wk_not_a_source_key" not in logged[0]


def test_requests_that_will_never_be_accepted_are_400_naming_the_problem(collector_factory):
    collector = collector_factory(max_event_bytes=2048, max_request_bytes=64 * 1024)
    url = f"{collector.url}/v1/batch"
    big_event = {
        "type": "track",
        "event": "Product Viewed",
        "anonymousId": "a-1",
        "properties": {"product_id": "p-1", "blob": "x" * 4000},
    }
    small = {"type": "page", "anonymousId": "a-1"}
    bomb = gzip.compress(b'{"batch": [' + b" " * (50 * 1024 * 1024) + b"]}")
    cases = {
        "malformed": post(url, b'{"batch": [', headers={}),
        "not an object": post(url, b"[1, 2]"),
        "batch not a list": post(url, {"batch": {"type": "page"}}),
        "event over the limit": post(url, {"batch": [big_event]}),
        "request over the limit": post(url, {"batch": [small] * 3000}),
        "gzip bomb": post(url, bomb, headers={"Content-Encoding": "gzip"}),
        "not gzip": post(url, b"not gzip", headers={"Content-Encoding": "gzip"}),
    }
    codes = {name: (status, body.get("code")) for name, (status, body, _) in cases.items()}
    assert codes == {
        "malformed": (400, "invalid_json"),
        "not an object": (400, "invalid_json"),
        "batch not a list": (400, "invalid_batch"),
        "event over the limit": (400, "event_too_large"),
        "request over the limit": (400, "request_too_large"),
        "gzip bomb": (400, "request_too_large"),
        "not gzip": (400, "invalid_encoding"),
    }
    assert "collector.max_event_bytes" in cases["event over the limit"][1]["message"]
    assert "65,536" in cases["gzip bomb"][1]["message"]


def test_gzip_and_text_plain_bodies_are_read_as_json_whatever_the_content_type(
    collector_factory,
):
    collector = collector_factory()
    event = {"type": "page", "anonymousId": "a-1", "messageId": "m-gzip"}
    gzipped = gzip.compress(json.dumps({"batch": [event]}).encode())
    rudder_node = {"Content-Encoding": "gzip", "Content-Type": "application/x-www-form-urlencoded"}
    analytics_js = {"Content-Type": "text/plain"}
    assert post(f"{collector.url}/v1/batch", gzipped, headers=rudder_node)[0] == 200
    plain = {**event, "messageId": "m-plain", "writeKey": SERVER_KEY}
    assert post(f"{collector.url}/v1/p", plain, key=None, headers=analytics_js)[0] == 200
    collector.ingest()
    assert stored(collector, "SELECT event_id, type FROM events ORDER BY 1") == [
        ("m-gzip", "page_viewed"),
        ("m-plain", "page_viewed"),
    ]


def test_bad_events_in_a_good_batch_are_dead_lettered_with_a_reason_and_the_rest_stored(
    collector_factory,
):
    collector = collector_factory()
    good = {"type": "page", "messageId": "m-good", "anonymousId": "a-1"}
    no_identity = {"type": "page", "messageId": "m-no-id"}
    unknown_type = {
        "type": "track",
        "event": "Wished Upon A Star",
        "messageId": "m-unknown",
        "anonymousId": "a-1",
    }
    body = json.dumps({"batch": [good, no_identity, unknown_type, "not an event"]})
    repeated = (
        '{"type": "track", "event": "Order Completed", "messageId": "m-repeat", "userId": "u-1", '
        '"properties": {"order_id": "o-1", "total": 5, "total": 5000}}'
    )
    body = body[:-2] + ", " + repeated + "]}"
    status, answer, _ = post(f"{collector.url}/v1/batch", body.encode())
    assert (status, answer) == (200, {"success": True})
    collector.ingest()
    assert stored(collector, "SELECT event_id FROM events") == [("m-good",)]
    reasons = [reason for (reason,) in stored(collector, "SELECT reason FROM dead_letters")]
    assert len(reasons) == 4
    assert any("user_id or anonymous_id" in reason for reason in reasons)
    assert any("Wished Upon A Star" in reason for reason in reasons)
    assert any("properties.total" in reason and "repeated" in reason for reason in reasons)
    raw = stored(collector, "SELECT raw FROM dead_letters WHERE reason LIKE '%repeated%'")
    assert b'"total": 5, "total": 5000' in raw[0][0].replace(b'":', b'": ').replace(b",", b", ")


def test_event_time_is_corrected_for_the_client_clock_by_segments_rule(collector_factory):
    collector = collector_factory()
    # The client's clock runs two hours fast; it sent the event ten seconds after it
    # happened, so the event happened ten seconds before the server received it.
    client_now = datetime.now(UTC) + timedelta(hours=2)
    event = {
        "type": "page",
        "messageId": "m-skewed",
        "anonymousId": "a-1",
        "originalTimestamp": _iso(client_now - timedelta(seconds=10)),
    }
    posted_at = datetime.now(UTC)
    assert (
        post(f"{collector.url}/v1/batch", {"batch": [event], "sentAt": _iso(client_now)})[0] == 200
    )
    no_sent_at = {
        "type": "page",
        "messageId": "m-own-time",
        "anonymousId": "a-1",
        "timestamp": "2026-05-01T10:00:00+02:00",
    }
    assert post(f"{collector.url}/v1/page", no_sent_at)[0] == 200
    collector.ingest()
    rows = dict(stored(collector, "SELECT event_id, occurred_at FROM events"))
    skew = rows["m-skewed"] - (posted_at - timedelta(seconds=10))
    assert abs(skew.total_seconds()) < 2
    assert rows["m-own-time"] == datetime(2026, 5, 1, 8, tzinfo=UTC)
    kept = stored(
        collector,
        "SELECT payload->>'originalTimestamp', payload->>'sentAt', payload->>'receivedAt' "
        "FROM events WHERE event_id = 'm-skewed'",
    )[0]
    assert kept[0] == event["originalTimestamp"] and kept[1] == _iso(client_now)
    assert abs(datetime.fromisoformat(kept[2]) - posted_at) < timedelta(seconds=2)


def test_cors_preflight_and_posts_name_only_allowed_origins_and_never_allow_credentials(
    collector_factory,
):
    collector = collector_factory()
    preflight_headers = {
        "Origin": "http://shop.test",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, x-retry-count",
    }
    allowed = _options(f"{collector.url}/v1/t", preflight_headers)
    refused = _options(f"{collector.url}/v1/t", {**preflight_headers, "Origin": "http://evil.test"})
    assert allowed[0] == 204
    assert allowed[1]["access-control-allow-origin"] == "http://shop.test"
    assert "authorization" in allowed[1]["access-control-allow-headers"].lower()
    assert "x-retry-count" in allowed[1]["access-control-allow-headers"].lower()
    assert refused[0] == 403 and "access-control-allow-origin" not in refused[1]
    event = {"type": "page", "anonymousId": "a-1"}
    from_shop = post(
        f"{collector.url}/v1/p", event, key=WEB_KEY, headers={"Origin": "http://shop.test"}
    )
    from_evil = post(
        f"{collector.url}/v1/p", event, key=WEB_KEY, headers={"Origin": "http://evil.test"}
    )
    backend_key_in_browser = post(
        f"{collector.url}/v1/p", event, headers={"Origin": "http://shop.test"}
    )
    assert from_shop[0] == 200
    assert _lower(from_shop[2])["access-control-allow-origin"] == "http://shop.test"
    assert from_evil[0] == 403 and from_evil[1]["code"] == "origin_not_allowed"
    assert backend_key_in_browser[0] == 403
    for answer in (allowed[1], _lower(from_shop[2]), _lower(from_evil[2])):
        assert "access-control-allow-credentials" not in answer


def _lower(headers: dict) -> dict:
    return {name.lower(): value for name, value in headers.items()}


def _options(url: str, headers: dict[str, str]) -> tuple[int, dict]:
    request = urllib.request.Request(url, method="OPTIONS", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, _lower(dict(answer.headers))
    except urllib.error.HTTPError as error:
        return error.code, _lower(dict(error.headers))


def test_a_retried_batch_is_stored_once_and_the_ip_is_kept_only_where_the_source_asks(
    collector_factory,
):
    collector = collector_factory(
        sources=[
            {"name": "app", "write_key": SERVER_KEY, "capture_ip": True},
            {"name": "web", "write_key": WEB_KEY},
        ]
    )
    batch = {"batch": [{"type": "page", "messageId": "m-1", "anonymousId": "a-1"}]}
    for _ in range(2):  # an SDK that did not see the first answer sends the batch again
        assert post(f"{collector.url}/v1/batch", batch)[0] == 200
    web = {"batch": [{"type": "page", "messageId": "m-2", "anonymousId": "a-2"}]}
    assert post(f"{collector.url}/v1/batch", web, key=WEB_KEY)[0] == 200
    collector.ingest()
    assert stored(
        collector, "SELECT event_id, payload->>'$.context.ip' FROM events ORDER BY 1"
    ) == [("m-1", "127.0.0.1"), ("m-2", None)]
    assert stored(collector, "SELECT count(*) FROM duplicate_events") == [(1,)]


def test_a_collector_started_before_its_broker_answers_503_then_collects_once_it_is_up(
    collector_factory, isolated_config, tmp_path
):
    port = free_port()
    config = isolated_config.read_text().replace(
        isolated_config.read_text().split('bootstrap_servers = "')[1].split('"')[0],
        f"127.0.0.1:{port}",
    )
    collector = collector_factory(config_text=config, create_topics=False)
    event = {"batch": [{"type": "page", "messageId": "m-early", "anonymousId": "a-1"}]}
    status, answer, headers = post(f"{collector.url}/v1/batch", event)
    assert (status, answer["code"]) == (503, "unavailable")
    assert "not connected to Kafka" in answer["message"] and _lower(headers)["retry-after"] == "5"
    with urllib.request.urlopen(f"{collector.url}/healthz") as health:
        assert json.loads(health.read())["status"] == "waiting for Kafka"
    broker = start_local_broker(port, tmp_path / "late-broker.log")
    try:
        create_topics(collector.settings)
        deadline = time.monotonic() + 30
        while (status := post(f"{collector.url}/v1/batch", event)[0]) == 503:
            assert time.monotonic() < deadline, collector.log()[-2000:]
            time.sleep(0.5)
        assert status == 200
        assert "answering 503 until it answers" in collector.log()
        collector.ingest()
        assert stored(collector, "SELECT event_id FROM events") == [("m-early",)]
        assert collector.stop() == 0
    finally:
        broker.stop()


def test_unknown_paths_are_404_and_share_one_metric_label_whatever_the_path(collector_factory):
    collector = collector_factory()
    for n in range(3):
        assert post(f"{collector.url}/v1/nothing-{n}", {"type": "page"})[0] == 404
    preflight = _options(f"{collector.url}/v1/nothing", {"Origin": "http://shop.test"})
    assert preflight[0] == 404
    with urllib.request.urlopen(f"{collector.url}/metrics") as answer:
        scraped = answer.read().decode()
    assert 'cdp_collector_requests_total{call="unknown",status="404"} 4.0' in scraped
    assert "nothing-" not in scraped


def test_a_body_that_trickles_in_past_the_deadline_is_answered_408_and_let_go(
    collector_factory,
):
    collector = collector_factory(delivery_timeout_s=1.0)
    host, port = collector.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as slow:
        auth = base64.b64encode(f"{SERVER_KEY}:".encode()).decode()
        slow.sendall(
            b"POST /v1/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Basic " + auth.encode() + b"\r\nContent-Length: 100\r\n\r\n{"
        )
        answer = b""
        while b"request_timeout" not in answer and (chunk := slow.recv(4096)):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"request_timeout" in answer
