"""`cdp collect` as the real Python SDKs from PyPI meet it: segment-analytics-python and
rudder-sdk-python send on their own threads, with their own batching, encoding, auth
and retries; `cdp ingest` then stores what they sent. Every call the test makes must
be stored exactly once, with its type, ids, traits and time.

Each SDK's HTTP session is replaced by one that records every exchange, so the tests
also see (and pin down) what the SDKs put on the wire: path, auth, gzip, envelope.
Every call carries ``context.test_seq``, its index in the test's script, so a stored
row is matched to the call it came from even when the SDK chose the messageId.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import signal
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import duckdb
import pytest
import requests
import rudderstack.analytics as rudder_analytics
import rudderstack.analytics.request as rudder_request
import segment.analytics as analytics
import segment.analytics.request as segment_request

from tests.ingest.collector.conftest import SERVER_KEY

pytestmark = pytest.mark.kafka

# The corrected time is receivedAt - (sentAt - originalTimestamp): with the SDK's clock
# the server's, it is the given timestamp plus the request's time in transit.
TRANSIT_S = 2.0


# --- what the SDKs put on the wire -------------------------------------------------


@dataclass
class Exchange:
    """One HTTP request an SDK made, and how the collector answered (None: no answer)."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]  # inflated and parsed
    gzipped: bool
    status: int | None
    retry_after: str | None


class RecordingSession(requests.Session):
    """The SDK's HTTP session, keeping every exchange."""

    def __init__(self) -> None:
        super().__init__()
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        raw = request.body if isinstance(request.body, bytes) else str(request.body).encode()
        gzipped = request.headers.get("Content-Encoding") == "gzip"
        record = Exchange(
            path=requests.utils.urlparse(request.url).path,
            headers=dict(request.headers),
            body=json.loads(gzip.decompress(raw) if gzipped else raw),
            gzipped=gzipped,
            status=None,
            retry_after=None,
        )
        try:
            response = super().send(request, **kwargs)
        finally:
            with self._lock:
                self.exchanges.append(record)
        record.status = response.status_code
        record.retry_after = response.headers.get("Retry-After")
        return response

    def ids_sent(self) -> dict[int, set[str]]:
        """Every messageId sent for each call (by ``context.test_seq``), retries included."""
        found: dict[int, set[str]] = {}
        for exchange in self.exchanges:
            for event in exchange.body["batch"]:
                found.setdefault(event["context"]["test_seq"], set()).add(event["messageId"])
        return found


@pytest.fixture
def segment_wire(monkeypatch: pytest.MonkeyPatch) -> RecordingSession:
    session = RecordingSession()
    monkeypatch.setattr(segment_request, "_session", session)
    return session


@pytest.fixture
def rudder_wire(monkeypatch: pytest.MonkeyPatch) -> RecordingSession:
    session = RecordingSession()
    monkeypatch.setattr(rudder_request, "_session", session)
    return session


# --- the calls a test makes, and what each should become -----------------------------


@dataclass
class Call:
    seq: int
    method: str  # the SDK's function: track, identify, page, screen, alias, group
    kwargs: dict[str, Any]
    type: str  # canonical type it should be stored as
    user_id: str | None
    anonymous_id: str | None
    timestamp: datetime
    email: str | None = None
    message_id: str | None = None  # given explicitly, or as the SDK returned it
    sent_ids: set[str] = field(default_factory=set)  # as seen on the wire


def script(users: int, start: datetime, id_prefix: str) -> list[Call]:
    """Eight calls per user, of every kind, users interleaved, each at its own time;
    alias, group and every fifth call get an explicit messageId."""
    calls: list[Call] = []

    def add(method: str, type_: str, user: str | None, anon: str | None, **kwargs: Any):
        seq = len(calls)
        moment = start + timedelta(seconds=37 * seq, milliseconds=seq % 1000)
        message_id = None
        if method in ("alias", "group") or seq % 5 == 0:
            message_id = f"{id_prefix}-{seq:05d}"
            kwargs["message_id"] = message_id
        if user is not None:
            kwargs["user_id"] = user
        if anon is not None:
            kwargs["anonymous_id"] = anon
        kwargs |= {"timestamp": moment, "context": {"test_seq": seq}}
        email = kwargs.get("traits", {}).get("email") if method == "identify" else None
        calls.append(Call(seq, method, kwargs, type_, user, anon, moment, email, message_id))

    for i in range(users):
        user, anon = f"{id_prefix}-user-{i}", f"{id_prefix}-anon-{i}"
        product, cart = f"sku-{i % 17}", f"cart-{i}"
        add(
            "page",
            "page_viewed",
            None,
            anon,
            name="Home",
            properties={"url": f"https://shop.test/?u={i}"},
        )
        add(
            "track",
            "product_viewed",
            None,
            anon,
            event="Product Viewed",
            properties={"product_id": product, "price": 9.5},
        )
        add(
            "identify",
            "identify",
            user,
            anon,
            traits={"email": f"buyer{i}@example.com", "first_name": f"B{i}"},
        )
        add("alias", "alias", user, None, previous_id=anon)
        add(
            "track",
            "product_added",
            user,
            None,
            event="Product Added",
            properties={"product_id": product, "cart_id": cart, "quantity": 1 + i % 3},
        )
        amount = {"total": 19.0 + i} if i % 2 else {"revenue": 21.5 + i}
        add(
            "track",
            "order_completed",
            user,
            None,
            event="Order Completed",
            properties={"order_id": f"o-{id_prefix}-{i}", "currency": "EUR", **amount},
        )
        add("screen", "screen_viewed", user, None, name="Order confirmation")
        add("group", "group", user, None, group_id=f"acct-{i % 4}", traits={"plan": "pro"})
    return calls


def make_calls(sdk: ModuleType | Any, calls: list[Call]) -> None:
    """Make each call; where the SDK returns (success, message), keep its messageId."""
    for call in calls:
        returned = getattr(sdk, call.method)(**call.kwargs)
        if returned is not None:
            queued, message = returned
            assert queued, f"the SDK did not queue call {call.seq}"
            assert call.message_id in (None, message["messageId"])
            call.message_id = message["messageId"]


def whole_milliseconds(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


# --- what ingest stored -------------------------------------------------------------


def stored(collector, sql: str) -> list[tuple]:
    with duckdb.connect(str(collector.settings.storage.db_path), read_only=True) as con:
        return con.execute(sql).fetchall()


def assert_each_call_stored_once(collector, calls: list[Call], library: str) -> None:
    """Every call in ``events`` once, as the call said; nothing dead-lettered."""
    assert stored(collector, "SELECT error_kind, reason FROM dead_letters") == []
    rows = stored(
        collector,
        "SELECT (payload->>'$.context.test_seq')::INTEGER, event_id, type, user_id, "
        "anonymous_id, email, epoch_ms(occurred_at), payload->>'$.originalTimestamp', "
        "payload->>'$.sentAt', payload->>'$.receivedAt', payload->>'$.context.source', "
        "payload->>'$.context.library.name' FROM events",
    )
    by_seq = {row[0]: row for row in rows}
    assert len(rows) == len(by_seq) == len(calls), "an event is missing or stored twice"
    assert set(by_seq) == {call.seq for call in calls}
    for call in calls:
        row = by_seq[call.seq]
        event_id, type_, user_id, anon_id, email, occurred_ms, original = row[1:8]
        sent_at, received_at, source, library_name = row[8:]
        # The id the SDK chose (or was given) is the event's id, the same on every retry.
        assert call.sent_ids == {call.message_id}, call
        assert event_id == call.message_id
        assert (type_, user_id, anon_id, email) == (
            call.type,
            call.user_id,
            call.anonymous_id,
            call.email,
        ), call
        assert datetime.fromisoformat(original) == call.timestamp, call
        skew = occurred_ms / 1000 - call.timestamp.timestamp()
        assert -0.01 <= skew <= TRANSIT_S, (call, original, sent_at, received_at)
        assert datetime.fromisoformat(received_at) >= datetime.fromisoformat(sent_at) - timedelta(
            seconds=1
        )
        assert (source, library_name) == ("backend", library)


def basic_auth(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


# --- the tests ----------------------------------------------------------------------


def send_through(
    sdk: ModuleType, host_attribute: str, url: str, calls: list, monkeypatch
) -> list[tuple[Exception, list]]:
    """Make ``calls`` through an SDK's module-level API, configured as its README says
    (write key, host), flush and shut it down; the errors its ``on_error`` heard."""
    errors: list[tuple[Exception, list]] = []
    monkeypatch.setattr(sdk, "default_client", None)
    monkeypatch.setattr(sdk, "write_key", SERVER_KEY)
    monkeypatch.setattr(sdk, host_attribute, url)
    monkeypatch.setattr(sdk, "on_error", lambda error, batch: errors.append((error, batch)))
    try:
        make_calls(sdk, calls)
        sdk.flush()
    finally:
        sdk.shutdown()
    return errors


def test_segment_analytics_python_events_are_each_stored_once_with_type_ids_traits_and_time(
    collector_factory, segment_wire, monkeypatch
):
    collector = collector_factory()
    calls = script(
        users=40, start=whole_milliseconds(datetime.now(UTC) - timedelta(days=2)), id_prefix="seg"
    )
    assert send_through(analytics, "host", collector.url, calls, monkeypatch) == []

    # What it sent: /v1/batch, Basic auth and the key in the body, plain JSON.
    assert segment_wire.exchanges and all(x.status == 200 for x in segment_wire.exchanges)
    for exchange in segment_wire.exchanges:
        assert exchange.path == "/v1/batch"
        assert exchange.headers["Authorization"] == basic_auth(SERVER_KEY)
        assert exchange.headers["Content-Type"] == "application/json"
        assert not exchange.gzipped
        assert set(exchange.body) == {"batch", "sentAt", "writeKey"}
        assert exchange.body["writeKey"] == SERVER_KEY
    for seq, ids in segment_wire.ids_sent().items():
        calls[seq].sent_ids = ids
    assert sum(len(x.body["batch"]) for x in segment_wire.exchanges) == len(calls)

    collector.ingest()
    assert_each_call_stored_once(collector, calls, library="analytics-python")
    assert stored(collector, "SELECT count(*) FROM duplicate_events") == [(0,)]


def test_rudder_sdk_python_gzipped_batches_are_each_stored_once_with_context_traits_as_email(
    collector_factory, rudder_wire, monkeypatch
):
    collector = collector_factory()
    calls = script(
        users=40, start=datetime.now(UTC) - timedelta(days=1, microseconds=123), id_prefix="rud"
    )
    # Its module-level calls return nothing: the SDK's own messageIds are read off the
    # wire (below); the explicit ones are checked to be the ones stored.
    assert send_through(rudder_analytics, "dataPlaneUrl", collector.url, calls, monkeypatch) == []

    # What it sent: /v1/batch, gzipped, Basic auth only; identify traits only in context.
    assert rudder_wire.exchanges and all(x.status == 200 for x in rudder_wire.exchanges)
    for exchange in rudder_wire.exchanges:
        assert exchange.path == "/v1/batch"
        assert exchange.headers["Authorization"] == basic_auth(SERVER_KEY)
        assert exchange.gzipped
        assert set(exchange.body) == {"batch", "sentAt"}
        for event in exchange.body["batch"]:
            if event["type"] == "identify":
                assert "traits" not in event and "email" in event["context"]["traits"]
    for seq, ids in rudder_wire.ids_sent().items():
        calls[seq].sent_ids = ids
        if calls[seq].message_id is None:
            calls[seq].message_id = next(iter(ids))
    assert sum(len(x.body["batch"]) for x in rudder_wire.exchanges) == len(calls)

    collector.ingest()
    assert_each_call_stored_once(collector, calls, library="analytics-python")
    assert stored(collector, "SELECT count(*) FROM duplicate_events") == [(0,)]


# --- back-pressure: a broker that stops answering -----------------------------------


def requests_answered(collector, status: int) -> float:
    with urllib.request.urlopen(f"{collector.url}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("cdp_collector_requests_total{") and f'status="{status}"' in line
    )


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(0.1)


def flush_within(client: analytics.Client, timeout_s: float, collector) -> None:
    """``client.flush()``, which waits for as long as the SDK keeps retrying, bounded."""
    flushing = threading.Thread(target=client.flush, daemon=True)
    flushing.start()
    flushing.join(timeout_s)
    if flushing.is_alive():
        with urllib.request.urlopen(f"{collector.url}/healthz", timeout=10) as answer:
            health = answer.read().decode()
        raise AssertionError(
            f"the SDK still had {client.queue.qsize()} events queued after {timeout_s} s; "
            f"collector: {health}, answered 503 {requests_answered(collector, 503):.0f} "
            f"times; its log ends: {collector.log()[-1500:]}"
        )


@pytest.mark.slow
def test_segment_sdk_retries_the_503s_of_a_stalled_broker_and_every_event_is_stored_once(
    collector_factory, isolated_config, kafka_bootstrap, own_broker, segment_wire
):
    """The broker stalls (SIGSTOP) for longer than delivery_timeout_s while the SDK sends.

    Known to fail with kafka-python 3.0.12 when the collector's producer is idempotent
    (its default with acks=all): once a retried batch expires, the producer resets its
    producer id and never sends again, so every later request is answered 503."""
    config = isolated_config.read_text().replace(
        f'bootstrap_servers = "{kafka_bootstrap}"',
        f'bootstrap_servers = "{own_broker.bootstrap_servers}"',
    )
    assert own_broker.bootstrap_servers in config
    collector = collector_factory(config_text=config, delivery_timeout_s=2, retry_after_s=1)
    errors: list[tuple[Exception, list]] = []
    client = analytics.Client(
        SERVER_KEY,
        host=collector.url,
        max_retries=20,
        on_error=lambda error, batch: errors.append((error, batch)),
    )
    calls = script(
        users=60, start=whole_milliseconds(datetime.now(UTC) - timedelta(hours=5)), id_prefix="bp"
    )
    third = len(calls) // 3
    stopped = False
    try:
        make_calls(client, calls[:third])  # a working broker
        flush_within(client, 30, collector)
        assert {x.status for x in segment_wire.exchanges} == {200}

        os.kill(own_broker.process.pid, signal.SIGSTOP)
        stopped = True
        paused_at = time.monotonic()
        make_calls(client, calls[third : 2 * third])
        wait_for(lambda: requests_answered(collector, 503) >= 1, 20, "an answer 503")
        time.sleep(max(0.0, 5 - (time.monotonic() - paused_at)))  # retries meet it too
        os.kill(own_broker.process.pid, signal.SIGCONT)
        stopped = False

        make_calls(client, calls[2 * third :])
        flush_within(client, 40, collector)
    finally:
        if stopped:
            os.kill(own_broker.process.pid, signal.SIGCONT)
        client.join()  # stops its thread; shutdown() would first wait for the queue
    assert errors == []  # the SDK gave up on nothing

    # The collector said "try later" while Kafka could not take the events, and the SDK
    # did: the same events, same messageIds, until answered 200.
    unavailable = [x for x in segment_wire.exchanges if x.status == 503]
    assert unavailable, [x.status for x in segment_wire.exchanges]
    assert {x.retry_after for x in unavailable} == {"1"}
    assert requests_answered(collector, 503) == len(unavailable)
    assert all(x.status in (200, 503) for x in segment_wire.exchanges)
    delivered = {
        event["messageId"]
        for x in segment_wire.exchanges
        if x.status == 200
        for event in x.body["batch"]
    }
    for seq, ids in segment_wire.ids_sent().items():
        calls[seq].sent_ids = ids
    assert delivered == {call.message_id for call in calls}

    collector.ingest()
    assert_each_call_stored_once(collector, calls, library="analytics-python")
    # A request answered 503 may still have reached Kafka: its retry is then a
    # duplicate, recorded as one, never stored twice.
    duplicates = stored(collector, "SELECT event_id FROM duplicate_events")
    assert {event_id for (event_id,) in duplicates} <= delivered
