import json
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest

from cdp.ingest import validation
from cdp.ingest.events import Family, parse_event
from cdp.ingest.validation import RawMessage, ValidationLimits, validate_batch
from tests.helpers import encode, event, one_of_each_type
from tests.ingest.untrusted_json import (
    Literal,
    Pairs,
    order_with_lines,
    reject_cases,
    repeat_key,
    to_json,
)

TOPICS = {"t.purchases": Family.PURCHASE, "t.browse": Family.BROWSE}


SMALL = ValidationLimits(max_event_bytes=10_000)
DEFAULT_LIMITS = ValidationLimits()


def _one(value: bytes, topic: str = "t.browse", limits: ValidationLimits = SMALL):
    batch = validate_batch([RawMessage(value, topic, 0, 7)], TOPICS, limits)
    assert batch.events.num_rows + batch.dead_letters.num_rows == 1
    return batch


@pytest.mark.parametrize(
    ("value", "kind", "reason_part"),
    [
        (b"", "empty", "empty message"),
        (b'{"event_id": "e", "type": ', "invalid_json", "not valid JSON"),
        (b"\xff\xfe{}", "not_utf8", "not UTF-8"),
        (b"[1, 2]", "invalid_json", "not an object"),
        (
            encode(event("page_viewed", "e", type="page_teleported")),
            "unknown_type",
            "unknown event type 'page_teleported'",
        ),
        (encode(event("page_viewed", "e", timestamp="yesterday")), "invalid_event", "timestamp:"),
        (
            encode(event("product_viewed", "e", properties={"product_id": "p", "price": "x"})),
            "invalid_event",
            "properties.price",
        ),
        (encode(event("order_completed", "e")), "wrong_topic", "arrived on topic 't.browse'"),
    ],
)
def test_bad_input_is_dead_lettered_with_kind_and_readable_reason(value, kind, reason_part):
    batch = _one(value)
    row = batch.dead_letters.to_pylist()[0]
    assert row["error_kind"] == kind
    assert reason_part in row["reason"]
    assert row["raw"] == value
    assert (row["source_topic"], row["source_partition"], row["source_offset"]) == (
        "t.browse",
        0,
        7,
    )


def test_oversized_payload_is_dead_lettered_without_parsing():
    value = encode(event("page_viewed", "e", padding="x" * 5000))
    row = _one(value, limits=ValidationLimits(max_event_bytes=1000)).dead_letters.to_pylist()[0]
    assert row["error_kind"] == "oversized"
    assert "limit (ingest.max_event_bytes) is 1000" in row["reason"]


def test_missing_field_reason_names_the_field():
    body = event("page_viewed", "e")
    del body["timestamp"]
    row = _one(encode(body)).dead_letters.to_pylist()[0]
    assert row["reason"] == "timestamp: required field is missing"


def test_sources_outside_the_topic_map_accept_every_family():
    messages = [
        RawMessage(encode(body), "file:/x.jsonl", 0, n) for n, body in enumerate(one_of_each_type())
    ]
    batch = validate_batch(messages, TOPICS)
    assert batch.events.num_rows == len(messages)
    assert batch.dead_letters.num_rows == 0


def test_every_message_comes_out_exactly_once():
    values = [encode(event("page_viewed", f"e{n}")) for n in range(50)] + [b"nope"] * 7
    batch = validate_batch([RawMessage(v, "t.browse", 1, n) for n, v in enumerate(values)], TOPICS)
    offsets = (
        batch.events["source_offset"].to_pylist() + batch.dead_letters["source_offset"].to_pylist()
    )
    assert sorted(offsets) == list(range(57))
    assert batch.consumed == 57


def test_event_rows_carry_the_canonical_type_family_and_utc_time():
    row = _one(encode(event("page_viewed", "e", type="Page Viewed"))).events.to_pylist()[0]
    assert (row["type"], row["family"]) == ("page_viewed", "browse")
    assert row["occurred_at"].isoformat() == "2026-03-01T11:00:00+00:00"


def _verdict(value: bytes, limits: ValidationLimits = DEFAULT_LIMITS) -> tuple[str, str]:
    """("stored", "") or (error kind, reason) for one message from a source of any family."""
    batch = validate_batch([RawMessage(value, "file:/x.jsonl", 0, 1)], None, limits)
    assert batch.events.num_rows + batch.dead_letters.num_rows == 1
    if batch.events.num_rows:
        return "stored", ""
    row = batch.dead_letters.to_pylist()[0]
    assert row["raw"] == value
    return row["error_kind"], row["reason"]


@pytest.mark.parametrize("case", reject_cases(), ids=lambda case: case.name)
def test_json_the_columns_could_read_differently_is_an_invalid_event_naming_the_field(case):
    kind, reason = _verdict(case.value)
    assert kind == "invalid_event"
    assert case.reason in reason


def test_a_repeated_key_is_named_even_when_its_last_value_is_also_invalid():
    body = repeat_key(event("product_viewed", "e"), "properties.price", "10.00")
    body = to_json(body).replace(b'"price": "19.99"', b'"price": "-3"')
    assert _verdict(body) == ("invalid_event", "properties.price: repeated key")


@pytest.mark.parametrize(
    "separator", [": ", ":", " : ", "\t:\n  ", "\n:"], ids=["space", "tight", "around", "tab", "nl"]
)
def test_a_repeated_key_is_found_however_the_json_is_spaced(separator):
    body = repeat_key(event("order_completed", "e"), "properties.total", "5000")
    assert _verdict(to_json(body, separator=separator)) == (
        "invalid_event",
        "properties.total: repeated key",
    )


def test_a_repeated_key_is_found_when_escapes_spell_it_or_quotes_hide_in_values():
    body = event("order_completed", "e", note='she said "total": 5000')
    raw = to_json(body).replace(b'"total": "39.98"', b'"total": "5000", "tot\\u0061l": "39.98"')
    assert _verdict(raw) == ("invalid_event", "properties.total: repeated key")


def test_a_repeated_key_spaced_from_its_colon_is_found_when_strings_hold_as_many_quote_colons():
    # Counted without removing whitespace, '":' would occur exactly as often as the
    # validated event has keys: the strings make up for the keys spaced from their colon.
    body = repeat_key(event("order_completed", "e", note="x"), "properties.total", "5000")
    raw = to_json(body, separator=" : ")
    keys = validation.count_keys(parse_event(raw))
    raw = raw.replace(b'"x"', b'"' + b'\\":' * keys + b'"')
    assert raw.count(b'":') == validation.count_keys(parse_event(raw))
    assert _verdict(raw) == ("invalid_event", "properties.total: repeated key")


def test_a_repeated_pretty_printed_key_is_found():
    body = repeat_key(event("page_viewed", "e"), "context.channel", "app")
    pretty = to_json(body).replace(b", ", b",\n    ").replace(b"{", b"{\n  ")
    assert _verdict(pretty) == ("invalid_event", "context.channel: repeated key")


@pytest.mark.parametrize(
    "body",
    [
        order_with_lines("lines"),  # the same keys in each order line
        event("page_viewed", "e", context={"campaign": {"name": "x"}}, properties={"name": "y"}),
        event("page_viewed", "e", properties={"note": '"total": 1, "total": 2'}),
        event("page_viewed", "e", properties={"face": ":-)", "ratio": "a : b", "t": "x\t:"}),
        event("page_viewed", "e", properties={"q": 'say \\"hi\\": "yes"'}),
        event("page_viewed", "e", properties={"url": "https://shop.example/?a=NaN&b=Infinity"}),
        event("page_viewed", "e", properties={"nested": [[{"a": 1}, {"a": 2}], {"a": 3}]}),
    ],
    ids=[
        "order-lines",
        "name-in-two-objects",
        "keys-in-text",
        "colons-in-text",
        "escaped-quotes",
        "nan-in-text",
        "lists-of-objects",
    ],
)
def test_json_without_repeated_keys_or_non_numbers_is_stored(body):
    assert _verdict(to_json(body)) == ("stored", "")
    assert _verdict(to_json(body, separator=" :\n")) == ("stored", "")


def test_a_key_spelled_with_escapes_is_the_same_key():
    # JSON text may spell a key with escapes; it is the same key.
    raw = encode(event("page_viewed", "e")).replace(b'"user_id"', b'"user_\\u0069d"')
    assert _verdict(raw) == ("stored", "")
    repeated = raw.replace(b'"anonymous_id"', b'"user_id": "x", "anonymous_id"')
    assert _verdict(repeated) == ("invalid_event", "user_id: repeated key")


@pytest.mark.parametrize("number", ["1e400", "-1E+999"])
def test_a_number_beyond_a_double_is_rejected_like_infinity(number):
    body = to_json(event("page_viewed", "e", properties={"x": Literal(number)}))
    assert _verdict(body) == (
        "invalid_event",
        f"properties.x: {number} is beyond the range of a JSON number (a double)",
    )


def test_ordinary_events_are_checked_without_parsing_them_again(monkeypatch):
    # The proof by counting keys covers ordinary JSON, compact or spaced; the second
    # parse (slow) is for the few messages it cannot clear.
    calls = []
    monkeypatch.setattr(validation, "_unsound_json", lambda value: calls.append(value))
    bodies = [*one_of_each_type(), order_with_lines("lines", coupon="A:B")]
    values = [encode(b) for b in bodies] + [json.dumps(b, indent=2).encode() for b in bodies]
    batch = validate_batch([RawMessage(v, "file:/x", 0, n) for n, v in enumerate(values)])
    assert batch.events.num_rows == len(values)
    assert calls == []


def test_both_spellings_of_an_aliased_field_are_not_a_repeated_key():
    body = event("page_viewed", "e", messageId="other-id", userId="other-user")
    assert _verdict(to_json(body)) == ("stored", "")


@pytest.mark.parametrize(
    "timestamp",
    ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-05:00", "1999-12-31T23:59:59.999Z"],
)
def test_timestamps_out_of_bounds_are_rejected_even_where_utc_would_overflow(timestamp):
    kind, reason = _verdict(encode(event("page_viewed", "e", timestamp=timestamp)))
    assert kind == "invalid_event"
    assert reason.startswith("timestamp: ")
    assert "ingest.earliest_event_time" in reason or "ingest.max_future_skew" in reason


def test_timestamps_inside_the_bounds_are_stored():
    soon = (datetime.now(UTC) + timedelta(hours=23)).isoformat()
    for timestamp in ["2000-01-01T00:00:00Z", "2000-01-01T01:00:00+01:00", soon]:
        assert _verdict(encode(event("page_viewed", "e", timestamp=timestamp))) == ("stored", "")


def test_timestamp_bounds_come_from_the_limits():
    limits = ValidationLimits(
        earliest_event_time=datetime(2026, 1, 1, tzinfo=UTC), max_future_skew=timedelta(0)
    )
    early = encode(event("page_viewed", "e", timestamp="2025-12-31T23:00:00+02:00"))
    assert _verdict(early, limits) == (
        "invalid_event",
        "timestamp: 2025-12-31T23:00:00+02:00 is before ingest.earliest_event_time "
        "(2026-01-01T00:00:00Z)",
    )
    ahead = (datetime.now(UTC) + timedelta(minutes=5)).replace(microsecond=0)
    kind, reason = _verdict(encode(event("page_viewed", "e", timestamp=ahead.isoformat())), limits)
    assert kind == "invalid_event"
    assert reason.startswith(
        f"timestamp: {ahead.isoformat().replace('+00:00', 'Z')} is more than "
        "ingest.max_future_skew (PT0S) after it was received ("
    )


def test_a_message_rejected_for_its_time_is_dead_lettered_whole_between_stored_ones():
    late = encode(event("page_viewed", "late", timestamp="1999-12-31T23:59:59Z"))
    messages = [
        RawMessage(encode(event("page_viewed", "a")), "t.browse", 2, 40, b"k-a"),
        RawMessage(late, "t.browse", 2, 41, b"k-late"),
        RawMessage(encode(event("page_viewed", "b")), "t.browse", 2, 42, None),
    ]
    batch = validate_batch(messages, TOPICS, DEFAULT_LIMITS)
    assert batch.events["event_id"].to_pylist() == ["a", "b"]
    assert batch.events["source_offset"].to_pylist() == [40, 42]
    [row] = batch.dead_letters.to_pylist()
    assert row["reason"].startswith("timestamp: 1999-12-31T23:59:59Z is before")
    assert (row["source_topic"], row["source_partition"], row["source_offset"]) == (
        "t.browse",
        2,
        41,
    )
    assert (row["message_key"], row["raw"]) == (b"k-late", late)


def test_without_payloads_each_event_names_its_message_and_the_payload_is_taken_back_alike():
    values = [
        encode(event("page_viewed", "a")),
        b"{not json",
        encode(event("page_viewed", "late", timestamp="1999-12-31T23:59:59Z")),
        encode(event("order_completed", "wrong topic")),
        encode(event("page_viewed", "b")),
    ]
    messages = [(value, "t.browse", 1, 100 + n, None) for n, value in enumerate(values)]
    whole = validation.validate_messages(messages, TOPICS, DEFAULT_LIMITS)
    indexed = validation.validate_messages(messages, TOPICS, DEFAULT_LIMITS, with_payload=False)
    assert indexed.events.schema == validation.INDEXED_EVENT_SCHEMA
    assert indexed.events["message_index"].to_pylist() == [0, 4]
    assert indexed.dead_letters.equals(whole.dead_letters)
    restored = validation.with_payloads(indexed.events, pa.array(values, pa.binary()))
    assert restored.equals(whole.events)


def test_the_largest_integer_a_quantity_column_holds_is_stored():
    for body in [
        event("product_added", "e", properties={"product_id": "p", "quantity": 2_147_483_647}),
        order_with_lines("e", first_quantity=2_147_483_647),
    ]:
        assert _verdict(encode(body)) == ("stored", "")


@pytest.mark.parametrize("price", ["100000000000000", "1e14", 1e14, "0.00001"])
def test_money_that_does_not_fit_decimal_18_4_is_rejected(price):
    body = event("product_viewed", "e", properties={"product_id": "p", "price": price})
    kind, reason = _verdict(encode(body))
    assert kind == "invalid_event"
    assert reason.startswith("properties.price: ")


def test_an_invalid_event_keeps_pydantics_reason_when_its_json_is_sound():
    body = event("product_viewed", "e", properties={"product_id": "p", "price": "-1"})
    kind, reason = _verdict(encode(body))
    assert kind == "invalid_event"
    assert reason.startswith("properties.price: Input should be greater than or equal to 0")


def test_a_message_with_several_problems_is_dead_lettered_once():
    body = repeat_key(
        event("page_viewed", "e", timestamp="0001-01-01T00:00:00Z", x=Literal("NaN")),
        "user_id",
        "u",
    )
    batch = validate_batch([RawMessage(to_json(body), "t.browse", 0, 0)], TOPICS)
    assert (batch.events.num_rows, batch.dead_letters.num_rows) == (0, 1)


def test_payloads_of_stored_events_are_standard_json():
    # Every stored payload parses with a parser that refuses NaN and Infinity.
    def refuse(literal):
        raise ValueError(literal)

    messages = [RawMessage(case.value, "file:/x", 0, n) for n, case in enumerate(reject_cases())]
    messages.append(RawMessage(encode(event("page_viewed", "ok")), "file:/x", 0, 99))
    batch = validate_batch(messages)
    assert batch.events["event_id"].to_pylist() == ["ok"]
    for payload in batch.events["payload"].to_pylist():
        json.loads(payload, parse_constant=refuse, object_pairs_hook=Pairs)
