"""Normalize: raw message bytes -> accepted event rows, or dead letters with a reason.

Every message handed to :func:`validate_batch` comes out exactly once, either as an
event row or as a dead letter carrying its raw bytes, so the caller can account for
every offset. Validation is pydantic's (``cdp.ingest.events``); this module decides
*what kind* of failure it was and words the reason for a person reading
``cdp dlq list``.

Only the envelope is turned into columns here. The typed property columns
(order totals, products, campaign, ...) are extracted from the validated payload by
DuckDB when the batch is written, in one SQL statement over the whole batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

import pyarrow as pa
from kafka.consumer.fetcher import ConsumerRecord
from pydantic import ValidationError

from cdp.ingest.events import FAMILY_OF_TYPE, Family, UnknownEventType, parse_event


class DeadLetterKind(StrEnum):
    EMPTY = "empty"
    OVERSIZED = "oversized"
    NOT_UTF8 = "not_utf8"
    INVALID_JSON = "invalid_json"
    UNKNOWN_TYPE = "unknown_type"
    INVALID_EVENT = "invalid_event"
    WRONG_TOPIC = "wrong_topic"


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One message as it arrived: Kafka coordinates, or file name and line number.

    Its attribute names match kafka-python's ``ConsumerRecord``, so consumed records
    are validated as they are, without copying.
    """

    value: bytes | None
    topic: str
    partition: int
    offset: int
    key: bytes | None = None


EVENT_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("type", pa.string()),
        ("family", pa.string()),
        ("occurred_at", pa.timestamp("us", tz="UTC")),
        ("user_id", pa.string()),
        ("anonymous_id", pa.string()),
        ("source_topic", pa.string()),
        ("source_partition", pa.int32()),
        ("source_offset", pa.int64()),
        ("payload", pa.string()),
    ]
)

DEAD_LETTER_SCHEMA = pa.schema(
    [
        ("source_topic", pa.string()),
        ("source_partition", pa.int32()),
        ("source_offset", pa.int64()),
        ("message_key", pa.binary()),
        ("raw", pa.binary()),
        ("error_kind", pa.string()),
        ("reason", pa.string()),
    ]
)


@dataclass
class ValidatedBatch:
    events: pa.Table
    dead_letters: pa.Table
    consumed: int = 0
    dead_letter_kinds: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Rejection:
    kind: DeadLetterKind
    reason: str


def validate_batch(
    messages: Iterable[RawMessage | ConsumerRecord],
    family_by_topic: Mapping[str, Family] | None = None,
    max_event_bytes: int = 262144,
) -> ValidatedBatch:
    """Split messages into event rows and dead letters (both as Arrow tables).

    ``family_by_topic`` maps each topic to the family it carries; an event of another
    family on it is dead-lettered as ``wrong_topic`` (a producer bug worth seeing).
    Sources not in the mapping (files) accept every family.
    """
    columns: dict[str, list] = {name: [] for name in EVENT_SCHEMA.names}
    dead: dict[str, list] = {name: [] for name in DEAD_LETTER_SCHEMA.names}
    kinds: dict[str, int] = {}
    consumed = 0
    family_by_topic = family_by_topic or {}
    # Local names: this loop runs once per message on the ingest hot path.
    append_id, append_type = columns["event_id"].append, columns["type"].append
    append_family, append_time = columns["family"].append, columns["occurred_at"].append
    append_user, append_anon = columns["user_id"].append, columns["anonymous_id"].append
    append_topic, append_part = columns["source_topic"].append, columns["source_partition"].append
    append_offset, append_payload = columns["source_offset"].append, columns["payload"].append

    for message in messages:
        consumed += 1
        value = message.value
        rejection: Rejection | None = None
        event = None
        if not value:
            rejection = Rejection(DeadLetterKind.EMPTY, "empty message (no value bytes)")
        elif len(value) > max_event_bytes:
            rejection = Rejection(
                DeadLetterKind.OVERSIZED,
                f"payload is {len(value)} bytes; the limit (ingest.max_event_bytes) "
                f"is {max_event_bytes}",
            )
        else:
            try:
                event = parse_event(value)
            except ValidationError as exc:
                rejection = describe_validation_error(exc, value)
        if event is not None:
            family = FAMILY_OF_TYPE[event["type"]]
            expected = family_by_topic.get(message.topic)
            if expected is not None and family is not expected:
                rejection = Rejection(
                    DeadLetterKind.WRONG_TOPIC,
                    f"{event['type']} is a {family} event but arrived on topic "
                    f"{message.topic!r}, which carries {expected} events",
                )
        if rejection is not None:
            dead["source_topic"].append(message.topic)
            dead["source_partition"].append(message.partition)
            dead["source_offset"].append(message.offset)
            dead["message_key"].append(message.key)
            dead["raw"].append(value if value is not None else b"")
            dead["error_kind"].append(rejection.kind.value)
            dead["reason"].append(rejection.reason)
            kinds[rejection.kind.value] = kinds.get(rejection.kind.value, 0) + 1
            continue
        append_id(event["event_id"])
        append_type(event["type"])
        append_family(family.value)
        append_time(event["timestamp"])
        append_user(event.get("user_id"))
        append_anon(event.get("anonymous_id"))
        append_topic(message.topic)
        append_part(message.partition)
        append_offset(message.offset)
        # Validation proved the bytes are UTF-8 JSON; store them as received.
        append_payload(value.decode("utf-8") if isinstance(value, bytes) else value)

    return ValidatedBatch(
        events=pa.Table.from_pydict(columns, schema=EVENT_SCHEMA),
        dead_letters=pa.Table.from_pydict(dead, schema=DEAD_LETTER_SCHEMA),
        consumed=consumed,
        dead_letter_kinds=kinds,
    )


def describe_validation_error(exc: ValidationError, raw: bytes | str) -> Rejection:
    """Classify a pydantic error and word it as 'field: problem (got value)'."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    if first["type"] == "json_invalid":
        if isinstance(raw, bytes):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as decode_error:
                return Rejection(
                    DeadLetterKind.NOT_UTF8,
                    f"payload is not UTF-8 text (bad byte at position {decode_error.start})",
                )
        detail = first.get("ctx", {}).get("error", first["msg"])
        return Rejection(DeadLetterKind.INVALID_JSON, f"payload is not valid JSON: {detail}")
    if first["type"] in ("model_type", "dict_type", "typed_dict_type") and not first["loc"]:
        return Rejection(DeadLetterKind.INVALID_JSON, "payload is JSON but not an object")
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, UnknownEventType):
        return Rejection(DeadLetterKind.UNKNOWN_TYPE, str(cause))
    return Rejection(DeadLetterKind.INVALID_EVENT, "; ".join(_describe(error) for error in errors))


def _describe(error: dict) -> str:
    key = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "missing":
        return f"{key}: required field is missing"
    if not key:
        return message
    shown = repr(error.get("input"))
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"{key}: {message} (got {shown})"
