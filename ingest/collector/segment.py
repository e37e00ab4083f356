"""The Segment HTTP Tracking API as SDKs really speak it: request body -> Kafka messages.

Everything here is pure (no I/O), so the protocol is tested without a server:

- :func:`read_body` inflates ``Content-Encoding: gzip`` with a cap, so a gzip bomb
  costs at most ``max_request_bytes`` of memory, and applies the request limit after
  inflation (a small gzip body may hold a large batch);
- :func:`parse_request` parses the body as JSON whatever the ``Content-Type`` says
  (analytics.js sends ``text/plain``, RudderStack's Node SDK labels gzip bodies
  form-urlencoded) and returns the envelope and its events;
- :func:`write_key_of` finds the write key in any of the three places SDKs put it;
- :func:`to_messages` turns each event into one Kafka message for its family's topic.

An event is passed on as the SDK sent it (camelCase and all: validation accepts
Segment's names), with what the server knows added: the envelope's ``context``
merged in, ``context.source``, ``receivedAt``, and ``timestamp`` corrected for the
client's clock by Segment's rule ``timestamp = receivedAt - (sentAt -
originalTimestamp)``. Validation happens where it happens for every other path, in
``cdp ingest``: an invalid event in a good batch is dead-lettered there with its
reason, and the request still succeeds (SDKs drop a whole batch answered 400). Only
what can never be accepted fails the request: a body that is not JSON, or one over
a limit.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from cdp.ingest.events import FAMILY_OF_TYPE, UnknownEventType, canonical_type
from cdp.ingest.validation import count_keys

# The calls of the Tracking API, by path: full names and analytics.js' short ones.
CALL_OF_PATH: dict[str, str] = {
    "track": "track",
    "identify": "identify",
    "page": "page",
    "screen": "screen",
    "group": "group",
    "alias": "alias",
    "batch": "batch",
    "t": "track",
    "i": "identify",
    "p": "page",
    "s": "screen",
    "g": "group",
    "a": "alias",
    "b": "batch",
}


_LONG_DIGITS = re.compile(rb"[0-9]{20}")
# A key written with whitespace before its colon (legal, rare).
_SPACED_KEY = re.compile(rb'"[ \t\n\r]+:')


class RequestRejected(Exception):
    """A request that will never be accepted: answered 400 with ``code`` and ``message``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class Limits:
    max_event_bytes: int
    max_request_bytes: int
    max_batch_events: int


@dataclass(frozen=True, slots=True)
class Message:
    """One event, ready for Kafka."""

    topic: str
    key: bytes | None
    value: bytes


def read_body(raw: bytes, content_encoding: str, limits: Limits) -> bytes:
    """The request body, inflated if gzipped, at most ``max_request_bytes`` long."""
    encoding = content_encoding.strip().lower()
    if encoding in ("gzip", "x-gzip", "deflate"):
        # gzip framing for gzip; for deflate, zlib framing (or gzip: detected).
        wbits = 16 + zlib.MAX_WBITS if encoding != "deflate" else 32 + zlib.MAX_WBITS
        inflater = zlib.decompressobj(wbits)
        try:
            body = inflater.decompress(raw, limits.max_request_bytes + 1)
        except zlib.error as exc:
            raise RequestRejected(
                "invalid_encoding", f"the body is not valid {encoding} data ({exc})"
            ) from None
        if len(body) > limits.max_request_bytes or inflater.unconsumed_tail:
            raise _request_too_large(limits, "after inflating")
        if not inflater.eof:
            raise RequestRejected("invalid_encoding", f"the {encoding} body is truncated")
        if inflater.unused_data:  # a second gzip member: no SDK sends one
            raise RequestRejected("invalid_encoding", f"the {encoding} body has data after its end")
    elif encoding in ("", "identity"):
        body = raw
        if len(body) > limits.max_request_bytes:
            raise _request_too_large(limits, "")
    else:
        raise RequestRejected(
            "unsupported_encoding",
            f"Content-Encoding {content_encoding!r} is not supported (send gzip or none)",
        )
    return body


def _request_too_large(limits: Limits, when: str) -> RequestRejected:
    return RequestRejected(
        "request_too_large",
        f"the request is over the limit of {limits.max_request_bytes:,} bytes"
        + (f" {when}" if when else "")
        + " (collector.max_request_bytes); send smaller batches",
    )


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    envelope: dict[str, Any]
    events: list[Any]  # items as sent; not every item need be an object
    keys_added: int = 0  # by the server (a single call's type), so not in the body


def parse_request(call: str, body: bytes, limits: Limits) -> ParsedRequest:
    """The envelope and its events. A batch's events are its ``batch`` list; a single
    call's event is the body itself, its type set by the path."""
    if not body.strip():
        raise RequestRejected("invalid_json", "the body is empty; send a JSON object")
    try:
        # orjson reads an integer of 2**64 or more as a float, rounding it (a numeric
        # userId of 30 digits would become 1.2345678901234568e+29); the standard
        # parser keeps it exact. Twenty digits in a row are needed for that.
        payload = json.loads(body) if _LONG_DIGITS.search(body) else orjson.loads(body)
    except (orjson.JSONDecodeError, ValueError, RecursionError) as exc:
        raise RequestRejected("invalid_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise RequestRejected(
            "invalid_json", f"the body must be a JSON object, not {_json_kind(payload)}"
        )
    if call != "batch":
        added = 0 if "type" in payload else 1
        payload["type"] = call
        return ParsedRequest({}, [payload], added)
    events = payload.get("batch")
    if not isinstance(events, list):
        raise RequestRejected(
            "invalid_batch", "'batch' must be a list of events" + _got(payload, "batch")
        )
    if len(events) > limits.max_batch_events:
        raise RequestRejected(
            "batch_too_large",
            f"the batch has {len(events):,} events, over the limit of "
            f"{limits.max_batch_events:,} (collector.max_batch_events)",
        )
    return ParsedRequest(payload, events)


def _json_kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


def _got(payload: dict, key: str) -> str:
    return f", got {_json_kind(payload[key])}" if key in payload else ", and it is missing"


def write_key_of(request: ParsedRequest, basic_user: str | None, query_key: str | None) -> str:
    """The write key from HTTP Basic auth, the body (envelope, then first event), or the
    query string, in that order; empty if none."""
    if basic_user:
        return basic_user
    for holder in (request.envelope, *request.events[:1]):
        if isinstance(holder, dict) and isinstance(holder.get("writeKey"), str):
            return holder["writeKey"]
    return query_key or ""


def to_messages(
    request: ParsedRequest,
    *,
    source: str,
    topic_by_family: Mapping[str, str],
    fallback_topic: str,
    received_at: datetime,
    client_ip: str | None,
    limits: Limits,
    body: bytes,
) -> list[Message]:
    """One Kafka message per event, keyed by the customer so one customer's events
    stay in order on one partition. An event whose type cannot be recognized goes to
    ``fallback_topic`` all the same, so that ingest dead-letters it with its bytes."""
    received = _iso(received_at)
    envelope = request.envelope
    envelope_context = envelope.get("context") if isinstance(envelope.get("context"), dict) else {}
    envelope_sent_at = envelope.get("sentAt")
    envelope_sent = _parse_time(envelope_sent_at)
    envelope_integrations = envelope.get("integrations")
    try:
        repeated = _events_with_repeated_keys(body, request) if request.events else {}
    except RecursionError:
        raise _too_deep() from None
    # What the envelope's context adds to every event is bounded with the request:
    # 30 KB of context on 2,500 tiny events would otherwise be 75 MB for Kafka.
    budget = 2 * limits.max_request_bytes + _MAPPING_ALLOWANCE * len(request.events)
    messages = []
    for index, event in enumerate(request.events):
        if index in repeated or not isinstance(event, dict):
            # Ingest dead-letters it: as sent, so the reason names the repeated key.
            value = repeated[index] if index in repeated else _dumps(event)
            messages.append(Message(fallback_topic, None, value))
            budget -= len(value)
            continue
        # The parsed event is this request's own: completed in place, not copied.
        if not event.get("messageId") and not event.get("event_id"):
            # Segment assigns one server-side; a digest of the event as sent keeps a
            # retry's copy recognizable as the same event.
            digest = hashlib.sha256(source.encode() + _dumps(event, sort_keys=True)).hexdigest()
            event["messageId"] = "cdp-" + digest[:32]
        event.pop("writeKey", None)  # the source is named in context; the key is noise
        context = event.get("context")
        if not isinstance(context, dict):
            context = event["context"] = dict(envelope_context)
        elif envelope_context:
            context = event["context"] = {**envelope_context, **context}
        context["source"] = source
        if client_ip is not None:  # a back end forwarding its visitor's IP keeps it
            context.setdefault("ip", client_ip)
        if envelope_integrations is not None and "integrations" not in event:
            event["integrations"] = envelope_integrations
        if event.get("type") == "identify" and "traits" not in event:
            # rudder-sdk-python sends an identify's traits only in context.traits.
            traits = context.get("traits")
            if isinstance(traits, dict):
                event["traits"] = traits
        _set_times(event, received, received_at, envelope_sent_at, envelope_sent)
        value = _dumps(event)
        budget -= len(value)
        if budget < 0:
            raise RequestRejected(
                "request_too_large",
                f"the batch's events come to over {2 * limits.max_request_bytes:,} bytes with "
                "its context merged into each (collector.max_request_bytes); send a smaller "
                "batch or context",
            )
        if len(value) > limits.max_event_bytes:
            raise RequestRejected(
                "event_too_large",
                f"event {index} ({event.get('messageId')!r}) is {len(value):,} bytes, over the "
                f"limit of {limits.max_event_bytes:,} (collector.max_event_bytes)",
            )
        topic = _topic_of(event, topic_by_family, fallback_topic)
        customer = (
            event.get("userId")
            or event.get("user_id")
            or event.get("anonymousId")
            or event.get("anonymous_id")
        )
        key = str(customer).encode() if customer is not None and customer != "" else None
        messages.append(Message(topic, key, value))
    return messages


_MAPPING_ALLOWANCE = 512  # bytes an event may grow by: receivedAt, source, timestamp...


def _dumps(item: Any, *, sort_keys: bool = False) -> bytes:
    """JSON bytes of a parsed item. orjson stops at 255 levels of nesting and at
    64-bit integers, both of which the body may hold: the standard library then."""
    try:
        return orjson.dumps(item, option=orjson.OPT_SORT_KEYS if sort_keys else None)
    except orjson.JSONEncodeError:
        try:
            return json.dumps(item, sort_keys=sort_keys, ensure_ascii=False).encode()
        except RecursionError:
            raise _too_deep() from None


def _too_deep() -> RequestRejected:
    return RequestRejected("invalid_json", "an event nests too deeply to be stored")


def _topic_of(event: dict, topic_by_family: Mapping[str, str], fallback: str) -> str:
    name = event.get("type")
    if name == "track":
        name = event.get("event")
    if not isinstance(name, str):
        return fallback
    try:
        return topic_by_family[FAMILY_OF_TYPE[canonical_type(name)].value]
    except UnknownEventType:
        return fallback


def _set_times(
    event: dict,
    received: str,
    received_at: datetime,
    envelope_sent_at: Any,
    envelope_sent: datetime | None,
) -> None:
    """``receivedAt`` is the server's clock; ``timestamp`` is corrected for the client's
    clock when the SDK said when it sent the event (``sentAt``). ``originalTimestamp``
    keeps what the client said."""
    event["receivedAt"] = received
    if "sentAt" in event:  # per event (rudder-sdk-node): parsed for this event alone
        sent_at = event["sentAt"]
        sent = _parse_time(sent_at)
    else:
        sent_at, sent = envelope_sent_at, envelope_sent
        if sent_at is not None:
            event["sentAt"] = sent_at
    original = event.get("originalTimestamp")
    if original is None:
        original = event.get("timestamp")
        if original is None:  # nothing to go by: the server's clock, as Segment does
            event["timestamp"] = received
            return
        event["originalTimestamp"] = original
    original_at = _parse_time(original) if sent is not None else None
    if original_at is not None and sent is not None:
        delay_s = sent.timestamp() - original_at.timestamp()
        try:
            event["timestamp"] = _iso_of_epoch(received_at.timestamp() - delay_s)
        except (OverflowError, OSError, ValueError):  # years out of range: validation says
            event["timestamp"] = original
    elif "timestamp" not in event:
        event["timestamp"] = original  # validation names it if it is not a time


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _iso(moment: datetime) -> str:
    return _iso_of_epoch(moment.timestamp())


_SECONDS_WRITTEN: dict[int, str] = {}
_FIRST_SECOND, _LAST_SECOND = -62_135_596_800, 253_402_300_799  # 0001-01-01, 9999-12-31


def _iso_of_epoch(epoch_s: float) -> str:
    """As JavaScript's toISOString() writes it (what SDKs send): UTC, milliseconds.

    A request's events are timed within a few seconds of each other, so each second's
    text is written once (``isoformat`` per event cost more than the rest of an
    event's mapping)."""
    epoch_ms = round(epoch_s * 1000)
    second, millis = divmod(epoch_ms, 1000)
    if not _FIRST_SECOND <= second <= _LAST_SECOND:
        raise ValueError(f"{epoch_s} s after 1970 is not within years 1-9999")
    text = _SECONDS_WRITTEN.get(second)
    if text is None:
        if len(_SECONDS_WRITTEN) > 100_000:
            _SECONDS_WRITTEN.clear()
        t = time.gmtime(second)
        text = _SECONDS_WRITTEN[second] = (
            f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
            f"T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
        )
    return f"{text}.{millis:03d}Z"


def _events_with_repeated_keys(body: bytes, request: ParsedRequest) -> dict[int, bytes]:
    """Events holding a repeated key, each as its text with the repeat kept.

    orjson keeps the last of a repeated key's values without a word, and what is sent
    on would then hide the ambiguity that ingest dead-letters (see
    ``cdp.ingest.validation``). Counting ``":`` in the body against the parsed keys
    (validation's own proof: each key is followed by ``":``, so equal counts mean no
    key repeats) clears almost every request without a second parse; only when the
    counts differ is the body parsed again keeping every pair."""
    parsed_keys = count_keys(request.envelope or request.events) - request.keys_added
    # Whitespace between a key and its colon is legal but rare: only then is the
    # whitespace taken out before counting (a copy of the body).
    counted = body if not _SPACED_KEY.search(body) else body.translate(None, b" \t\n\r")
    if counted.count(b'":') == parsed_keys:
        return {}
    pairs = json.loads(body, object_pairs_hook=_Pairs)
    items = dict(pairs).get("batch") if request.envelope else [pairs]
    found: dict[int, bytes] = {}
    for index, item in enumerate(items if isinstance(items, list) else []):
        if _has_repeat(item):
            found[index] = _dump_pairs(item).encode()
    return found


class _Pairs(list):
    """A JSON object as its (key, value) pairs, repeats included."""


def _has_repeat(item: Any) -> bool:
    if isinstance(item, _Pairs):
        keys = [key for key, _ in item]
        return len(keys) != len(set(keys)) or any(_has_repeat(value) for _, value in item)
    if isinstance(item, list):
        return any(_has_repeat(value) for value in item)
    return False


def _dump_pairs(item: Any) -> str:
    if isinstance(item, _Pairs):
        return "{" + ",".join(f"{json.dumps(k)}:{_dump_pairs(v)}" for k, v in item) + "}"
    if isinstance(item, list):
        return "[" + ",".join(_dump_pairs(value) for value in item) + "]"
    return json.dumps(item)
