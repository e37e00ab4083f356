"""The Segment protocol without a server: bodies, limits, write keys, mapping, time."""

from __future__ import annotations

import gzip
import json
import random
import zlib
from datetime import UTC, datetime, timedelta

import pytest

from cdp.ingest.collector.app import _basic_user
from cdp.ingest.collector.segment import (
    Limits,
    Message,
    ParsedRequest,
    RequestRejected,
    parse_request,
    read_body,
    to_messages,
    write_key_of,
)

LIMITS = Limits(max_event_bytes=32 * 1024, max_request_bytes=500 * 1024, max_batch_events=2500)
TOPICS = {"browse": "b", "cart": "c", "purchase": "p", "identify": "i"}
RECEIVED = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)


def messages_from(body: bytes, call: str = "batch", **overrides) -> list[Message]:
    """The Kafka messages of one request body, as the web source sends it."""
    options = {
        **dict(source="web", topic_by_family=TOPICS, fallback_topic="b", received_at=RECEIVED),
        **dict(client_ip=None, limits=LIMITS, body=body),
    }
    options.update(overrides)
    return to_messages(parse_request(call, body, LIMITS), **options)


def messages_of(call: str, payload: dict, **overrides) -> list[dict]:
    """The messages of ``payload``, each as its topic, key and parsed event."""
    return [
        {"topic": m.topic, "key": m.key, **json.loads(m.value)}
        for m in messages_from(json.dumps(payload).encode(), call, **overrides)
    ]


def test_timestamp_is_received_at_minus_the_clients_send_delay():
    [event] = messages_of(
        "batch",
        {
            "batch": [
                {
                    "type": "page",
                    "anonymousId": "a",
                    "originalTimestamp": "2030-01-01T00:00:00.000Z",
                }
            ],
            "sentAt": "2030-01-01T00:00:05.500Z",
        },
    )
    assert event["timestamp"] == "2026-11-30T11:59:54.500Z"
    assert event["receivedAt"] == "2026-11-30T12:00:00.000Z"
    assert event["sentAt"] == "2030-01-01T00:00:05.500Z"
    assert event["originalTimestamp"] == "2030-01-01T00:00:00.000Z"


def test_a_per_event_sent_at_wins_over_the_envelopes_and_a_timestamp_counts_as_original():
    [event] = messages_of(
        "batch",
        {
            "batch": [
                {
                    "type": "page",
                    "anonymousId": "a",
                    "timestamp": "2026-11-30T13:00:00Z",
                    "sentAt": "2026-11-30T13:00:01Z",
                }
            ],
            "sentAt": "2026-11-30T15:00:00Z",
        },
    )
    assert event["timestamp"] == "2026-11-30T11:59:59.000Z"
    assert event["originalTimestamp"] == "2026-11-30T13:00:00Z"


def test_without_sent_at_the_events_own_time_stands_and_without_any_the_server_time():
    own, none = messages_of(
        "batch",
        {
            "batch": [
                {"type": "page", "anonymousId": "a", "timestamp": "2026-01-01T00:00:00+02:00"},
                {"type": "page", "anonymousId": "a"},
            ]
        },
    )
    assert own["timestamp"] == "2026-01-01T00:00:00+02:00"
    assert none["timestamp"] == "2026-11-30T12:00:00.000Z"


def test_envelope_context_is_merged_under_the_events_own_and_the_source_is_named():
    [event] = messages_of(
        "batch",
        {
            "batch": [
                {
                    "type": "page",
                    "anonymousId": "a",
                    "writeKey": "k",
                    "context": {"locale": "de-DE"},
                }
            ],
            "context": {"locale": "en-US", "library": {"name": "x"}},
        },
    )
    assert event["context"] == {"locale": "de-DE", "library": {"name": "x"}, "source": "web"}
    assert "writeKey" not in event


def test_identify_traits_sent_only_in_context_become_the_events_traits():
    [event] = messages_of("identify", {"userId": "u", "context": {"traits": {"email": "a@b.c"}}})
    assert (event["type"], event["traits"]) == ("identify", {"email": "a@b.c"})


def test_each_event_goes_to_its_familys_topic_keyed_by_user_else_anonymous_id():
    events = messages_of(
        "batch",
        {
            "batch": [
                {"type": "track", "event": "Order Completed", "userId": "u", "anonymousId": "a"},
                {"type": "track", "event": "Product Added", "anonymousId": "a"},
                {"type": "alias", "userId": "u", "previousId": "a"},
                {"type": "screen", "anonymousId": "a"},
                {"type": "track", "event": "No Such Thing", "anonymousId": "a"},
            ]
        },
    )
    assert [(e["topic"], e["key"]) for e in events] == [
        ("p", b"u"),
        ("c", b"a"),
        ("i", b"u"),
        ("b", b"a"),
        ("b", b"a"),
    ]


def test_an_event_without_message_id_gets_one_that_a_retry_of_it_gets_again():
    payload = {"batch": [{"type": "page", "anonymousId": "a", "timestamp": "2026-01-01T00:00Z"}]}
    first = messages_of("batch", payload)[0]["messageId"]
    again = messages_of("batch", payload, received_at=datetime(2026, 12, 1, tzinfo=UTC))
    assert first.startswith("cdp-") and again[0]["messageId"] == first
    other_source = messages_of("batch", payload, source="app")[0]["messageId"]
    assert other_source != first


def test_the_ip_is_added_only_when_given():
    [with_ip] = messages_of("page", {"anonymousId": "a"}, client_ip="203.0.113.9")
    [without] = messages_of("page", {"anonymousId": "a"})
    assert with_ip["context"]["ip"] == "203.0.113.9" and "ip" not in without["context"]


def test_an_event_with_a_repeated_key_is_passed_on_as_written_for_ingest_to_dead_letter():
    body = (
        b'{"batch": [{"type": "page", "anonymousId": "a"}, '
        b'{"type": "page", "anonymousId": "a", "anonymousId": "b"}]}'
    )
    good, repeated = messages_from(body)
    assert json.loads(good.value)["context"]["source"] == "web"
    assert repeated.value == b'{"type":"page","anonymousId":"a","anonymousId":"b"}'


def test_a_single_calls_type_comes_from_its_path_without_a_repeated_key_check_misfiring():
    body = b'{"anonymousId": "a", "type": "track", "event": "Product Viewed"}'
    [message] = messages_from(body, "page")
    assert json.loads(message.value)["type"] == "page"


def test_gzip_is_inflated_up_to_the_request_limit_and_no_further():
    small = Limits(1024, 10_000, 10)
    assert read_body(gzip.compress(b"x" * 10_000), "gzip", small) == b"x" * 10_000
    with pytest.raises(RequestRejected, match="10,000 bytes after inflating") as bomb:
        read_body(gzip.compress(b"x" * 10_000_000), "gzip", small)
    assert bomb.value.code == "request_too_large"
    assert read_body(zlib.compress(b"{}"), "deflate", small) == b"{}"
    with pytest.raises(RequestRejected, match="truncated"):
        read_body(gzip.compress(b"x" * 5000)[:-20], "gzip", small)
    with pytest.raises(RequestRejected, match="'br' is not supported"):
        read_body(b"..", "br", small)


def test_a_batch_over_the_event_count_limit_is_rejected_naming_the_setting():
    with pytest.raises(RequestRejected, match=r"collector\.max_batch_events"):
        parse_request("batch", json.dumps({"batch": [{}] * 11}).encode(), Limits(1024, 10**6, 10))


def test_the_write_key_comes_from_basic_auth_then_the_body_then_the_query():
    request = ParsedRequest({"writeKey": "envelope"}, [{"writeKey": "event"}])
    assert write_key_of(request, "basic", "query") == "basic"
    assert write_key_of(request, None, "query") == "envelope"
    assert write_key_of(ParsedRequest({}, [{"writeKey": "event"}]), None, "q") == "event"
    assert write_key_of(ParsedRequest({}, [{}]), None, "query") == "query"
    assert write_key_of(ParsedRequest({}, [{}]), None, None) == ""


@pytest.mark.parametrize(
    ("header", "user"),
    [
        ("Basic d2tfMTIzOg==", "wk_123"),  # "wk_123:"
        ("Basic d2tfMTIz", "wk_123"),  # "wk_123", no colon
        ("basic d2tfMTIzOnB3", "wk_123"),  # "wk_123:pw"
        ("Bearer abc", None),
        ("Basic !!!", None),
        (None, None),
    ],
)
def test_basic_auth_user_is_the_write_key_with_or_without_the_colon(header, user):
    assert _basic_user(header) == user


def test_a_correction_past_the_calendar_keeps_the_clients_time_for_validation_to_judge():
    [event] = messages_of(
        "batch",
        {
            "batch": [
                {"type": "page", "anonymousId": "a", "originalTimestamp": "0001-01-01T00:00Z"}
            ],
            "sentAt": "9999-12-31T23:59:59Z",
        },
    )
    assert event["timestamp"] == "0001-01-01T00:00Z"


def test_times_are_written_as_javascript_writes_them_for_any_millisecond():
    from cdp.ingest.collector.segment import _iso_of_epoch

    rng = random.Random(7)
    for _ in range(2000):
        epoch_ms = rng.randrange(-62_135_596_800_000, 253_402_300_800_000)
        expected = datetime.fromtimestamp(0, UTC) + timedelta(milliseconds=epoch_ms)
        assert _iso_of_epoch(epoch_ms / 1000) == (
            expected.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        )


def test_a_key_with_space_before_its_colon_is_not_taken_for_a_repeat():
    body = b'{"batch": [{"type" : "page", "anonymousId" :"a"}]}'
    [message] = messages_from(body)
    assert json.loads(message.value)["context"] == {"source": "web"}


def test_an_event_nested_past_orjsons_depth_is_passed_on_for_ingest_to_judge_with_the_rest():
    deep = "[" * 300 + "]" * 300
    body = (
        '{"batch": [{"type": "page", "anonymousId": "a", "properties": {"x": ' + deep + "}},"
        ' {"type": "page", "anonymousId": "b"}]}'
    ).encode()
    nested, good = messages_from(body)
    assert json.loads(nested.value)["properties"]["x"] == json.loads(deep)
    assert json.loads(good.value)["anonymousId"] == "b"


def test_an_event_nested_past_any_parser_is_a_400_not_a_crash():
    deep = "[" * 1000 + "]" * 1000
    body = ('{"batch": [{"type": "page", "anonymousId": "a", "x": ' + deep + "}]}").encode()
    with pytest.raises(RequestRejected, match="nests too deeply") as rejected:
        messages_from(body)
    assert rejected.value.code == "invalid_json"


def test_integers_past_64_bits_are_kept_exact_in_the_event_and_its_key():
    body = b'{"batch": [{"type": "page", "userId": 123456789012345678901234567890}]}'
    [message] = messages_from(body)
    assert message.key == b"123456789012345678901234567890"
    assert b"123456789012345678901234567890" in message.value


def test_a_context_merged_into_thousands_of_tiny_events_cannot_multiply_the_request():
    context = {"blob": "x" * 30_000}
    events = [{"type": "page", "anonymousId": f"a{n}"} for n in range(2_000)]
    body = json.dumps({"batch": events, "context": context}).encode()
    with pytest.raises(RequestRejected, match="context merged into each") as rejected:
        messages_from(body)
    assert rejected.value.code == "request_too_large"


def test_a_repeated_key_written_with_a_space_before_its_colon_is_still_found():
    body = b'{"batch": [{"type": "page", "userId": "a", "userId" :"b"}]}'
    [message] = messages_from(body)
    assert message.value == b'{"type":"page","userId":"a","userId":"b"}'


def test_an_ip_the_sender_forwarded_is_kept_over_the_senders_own():
    body = b'{"batch": [{"type": "page", "anonymousId": "a", "context": {"ip": "198.51.100.7"}}]}'
    [message] = messages_from(body, client_ip="10.0.0.2")
    assert json.loads(message.value)["context"]["ip"] == "198.51.100.7"


def test_canonical_snake_case_ids_key_the_message_as_camel_case_ones_do():
    body = b'{"batch": [{"type": "page", "anonymous_id": "a"}, {"type": "page", "user_id": "u"}]}'
    assert [message.key for message in messages_from(body)] == [b"a", b"u"]


def test_data_after_the_end_of_a_gzip_body_is_refused():
    with pytest.raises(RequestRejected, match="data after its end"):
        read_body(gzip.compress(b"{}") + gzip.compress(b"{}"), "gzip", LIMITS)
