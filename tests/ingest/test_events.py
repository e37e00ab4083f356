from decimal import Decimal

import pytest
from pydantic import ValidationError

from cdp.ingest.events import (
    CANONICAL_TYPES,
    EVENT_VALIDATOR,
    SEGMENT_SPEC_NAMES,
    canonical_type,
    parse_event,
)
from tests.helpers import encode, event


@pytest.mark.parametrize("event_type", CANONICAL_TYPES)
def test_every_canonical_type_validates(event_type):
    parsed = parse_event(encode(event(event_type, "e-1")))
    assert parsed["type"] == event_type


@pytest.mark.parametrize(("segment_name", "canonical"), sorted(SEGMENT_SPEC_NAMES.items()))
def test_segment_spec_names_map_to_canonical_types(segment_name, canonical):
    assert canonical_type(segment_name) == canonical


def test_segment_track_call_with_camel_case_ids_is_accepted_as_is():
    parsed = parse_event(
        encode(
            {
                "messageId": "m-1",
                "type": "track",
                "event": "Order Completed",
                "userId": "u-9",
                "anonymousId": "a-9",
                "timestamp": "2026-01-02T03:04:05Z",
                "properties": {"order_id": "o-1", "revenue": 25, "currency": "usd"},
            }
        )
    )
    assert (parsed["event_id"], parsed["type"], parsed["user_id"], parsed["anonymous_id"]) == (
        "m-1",
        "order_completed",
        "u-9",
        "a-9",
    )
    assert parsed["properties"]["currency"] == "USD"


def test_money_is_kept_as_exact_decimal():
    parsed = parse_event(
        encode(event("order_completed", "e-1", properties={"order_id": "o", "total": 0.1}))
    )
    assert parsed["properties"]["total"] == Decimal("0.1")


def test_naive_timestamp_is_rejected_naming_the_field():
    with pytest.raises(ValidationError) as caught:
        parse_event(encode(event("page_viewed", "e-1", timestamp="2026-01-02T03:04:05")))
    assert caught.value.errors()[0]["loc"] == ("timestamp",)


def test_event_without_any_identity_is_rejected():
    body = event("page_viewed", "e-1")
    del body["user_id"], body["anonymous_id"]
    with pytest.raises(ValidationError, match="user_id or anonymous_id"):
        parse_event(encode(body))


def test_order_without_order_id_is_rejected_naming_the_property():
    with pytest.raises(ValidationError, match=r"properties\.order_id is required"):
        parse_event(encode(event("order_completed", "e-1", properties={"total": "1"})))


def test_unknown_keys_are_kept_not_rejected():
    parsed = parse_event(encode(event("page_viewed", "e-1", experiment="b")))
    assert parsed["experiment"] == "b"


def test_unknown_type_error_lists_the_accepted_names():
    with pytest.raises(ValueError, match="Order Completed"):
        canonical_type("order_teleported")


@pytest.mark.parametrize(("call", "missing"), [("alias", "previous_id"), ("group", "group_id")])
def test_alias_without_previous_id_and_group_without_group_id_are_rejected_naming_it(call, missing):
    body = {"messageId": "m-1", "type": call, "userId": "u-1", "timestamp": "2026-01-02T03:04:05Z"}
    with pytest.raises(ValidationError, match=f"{missing} is required for {call} events"):
        parse_event(encode(body))


def test_segment_alias_screen_and_group_calls_map_to_their_canonical_types():
    common = {"userId": "u-1", "timestamp": "2026-01-02T03:04:05Z"}
    alias = parse_event(encode({"messageId": "1", "type": "alias", "previousId": "a-1", **common}))
    screen = parse_event(encode({"messageId": "2", "type": "screen", "name": "Home", **common}))
    group = parse_event(encode({"messageId": "3", "type": "group", "groupId": "g-1", **common}))
    assert (alias["type"], alias["previous_id"]) == ("alias", "a-1")
    assert screen["type"] == "screen_viewed"
    assert (group["type"], group["group_id"]) == ("group", "g-1")


def test_ingest_validates_with_the_json_parsers_string_cache_off():
    # Ids, times and names are new in each event: caching them costs ~6% per event.
    assert repr(EVENT_VALIDATOR).endswith("cache_strings=False)")
