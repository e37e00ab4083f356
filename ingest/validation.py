"""Normalize: raw message bytes -> accepted event rows, or dead letters with a reason.

Every message handed to :func:`validate_batch` comes out exactly once, either as an
event row or as a dead letter carrying its raw bytes, so the caller can account for
every offset. Validation is pydantic's (``cdp.ingest.events``); this module decides
*what kind* of failure it was and words the reason for a person reading
``cdp dlq list``.

Only the envelope is turned into columns here. The typed property columns
(order totals, products, campaign, ...) are extracted from the validated payload by
DuckDB when the batch is written, in one SQL statement over the whole batch, and
builds read more of the payload the same way. DuckDB is a second JSON parser, so an
event is accepted only if both parsers must read it alike ("one parse, one truth"):

- no key may repeat within an object: pydantic keeps the last value, DuckDB the
  first (one repeated order ``total`` once moved a store's AOV from 64.77 to
  2,515.59);
- no ``NaN``/``Infinity`` anywhere: pydantic's parser accepts them, JSON does not,
  and the stored payload must be JSON;
- every value that becomes a typed column fits it (``cdp.ingest.events``), and the
  event time lies between ``ingest.earliest_event_time`` and ``ingest.max_future_skew``
  after the batch was received.

Checking for repeated keys must not cost a second parse of every message (validation
is the hot path of ingest). :func:`_cannot_differ` clears almost every message by
counting: the keys in the text against the keys pydantic kept; only where the counts
differ does :func:`_unsound_json` parse it again, to find the repeated key and its
path. Event times are checked once per batch, on the Arrow column.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ValidationError

from cdp.ingest.events import EVENT_VALIDATOR, FAMILY_OF_TYPE, Family, UnknownEventType
from cdp.settings import IngestSettings

if TYPE_CHECKING:  # kafka-python costs ~0.17 s to import; cdp load needs none of it
    from kafka.consumer.fetcher import ConsumerRecord


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
class ValidationLimits:
    """The configurable bounds on what an event may be (``[ingest]`` settings)."""

    max_event_bytes: int = 262144
    earliest_event_time: datetime = datetime(2000, 1, 1, tzinfo=UTC)
    max_future_skew: timedelta = timedelta(hours=24)

    def __post_init__(self) -> None:
        if self.earliest_event_time.tzinfo is None:
            raise ValueError("earliest_event_time needs a time zone")

    @classmethod
    def from_settings(cls, ingest: IngestSettings) -> ValidationLimits:
        return cls(ingest.max_event_bytes, ingest.earliest_event_time, ingest.max_future_skew)


DEFAULT_LIMITS = ValidationLimits()


@dataclass(frozen=True, slots=True)
class Rejection:
    kind: DeadLetterKind
    reason: str


def validate_batch(
    messages: Iterable[RawMessage | ConsumerRecord],
    family_by_topic: Mapping[str, Family] | None = None,
    limits: ValidationLimits = DEFAULT_LIMITS,
) -> ValidatedBatch:
    """Split messages into event rows and dead letters (both as Arrow tables).

    ``family_by_topic`` maps each topic to the family it carries; an event of another
    family on it is dead-lettered as ``wrong_topic`` (a producer bug worth seeing).
    Sources not in the mapping (files) accept every family. Event times are bounded
    by ``limits`` relative to now, the moment the batch is validated.
    """
    return validate_messages(
        ((m.value, m.topic, m.partition, m.offset, m.key) for m in messages),
        family_by_topic,
        limits,
    )


# One message as the validation loop reads it: value, topic, partition, offset, key.
# A tuple, not a RawMessage: making a frozen dataclass per message cost ~0.7 us.
_Message = tuple[bytes | None, str, int, int, bytes | None]


# The event table without its payload, as :func:`validate_messages` returns it to a
# caller that holds the messages' bytes already (the validator process's parent): the
# payload is then the ``message_index``-th message's value.
INDEXED_EVENT_SCHEMA = EVENT_SCHEMA.remove(EVENT_SCHEMA.get_field_index("payload")).append(
    pa.field("message_index", pa.int32())
)


def validate_messages(
    messages: Iterable[_Message],
    family_by_topic: Mapping[str, Family] | None,
    limits: ValidationLimits,
    *,
    with_payload: bool = True,
) -> ValidatedBatch:
    """:func:`validate_batch` over (value, topic, partition, offset, key) tuples.

    ``with_payload=False`` returns the events as :data:`INDEXED_EVENT_SCHEMA`: each
    accepted message's position in ``messages`` instead of its bytes."""
    max_event_bytes = limits.max_event_bytes
    received = datetime.now(UTC)
    # This loop runs once per message on the ingest hot path: one tuple per accepted
    # event, transposed into columns once at the end (where the event times are
    # checked, on the Arrow column).
    validate = EVENT_VALIDATOR.validate_json
    cannot_differ = _cannot_differ
    family_of = _FAMILY_NAME
    expected_of = {topic: family.value for topic, family in (family_by_topic or {}).items()}
    rows: list[tuple] = []
    # The accepted messages' keys, for the rare one rejected for its time at the end
    # (a dead letter keeps its key). Not the messages: 10k+ objects kept alive per
    # batch set off full garbage collections (~1 us a message).
    keys: list[bytes | None] = []
    rejected: list[tuple[RawMessage, Rejection]] = []
    consumed = 0
    for value, topic, partition, offset, key in messages:
        consumed += 1
        if not value:
            rejection = Rejection(DeadLetterKind.EMPTY, "empty message (no value bytes)")
            rejected.append((RawMessage(value, topic, partition, offset, key), rejection))
            continue
        if len(value) > max_event_bytes:
            rejection = _oversized(len(value), max_event_bytes)
            rejected.append((RawMessage(value, topic, partition, offset, key), rejection))
            continue
        try:
            event = validate(value)
        except ValidationError as exc:
            rejection = _invalid(exc, value)
            rejected.append((RawMessage(value, topic, partition, offset, key), rejection))
            continue
        if not cannot_differ(value, event):
            problem = _repeated_key_or_non_number(value)
            if problem is not None:
                rejection = Rejection(DeadLetterKind.INVALID_EVENT, problem)
                rejected.append((RawMessage(value, topic, partition, offset, key), rejection))
                continue
        family = family_of[event["type"]]
        expected = expected_of.get(topic)
        if expected is not None and family != expected:
            rejection = _wrong_topic(event["type"], family, topic, expected)
            rejected.append((RawMessage(value, topic, partition, offset, key), rejection))
            continue
        rows.append(
            (
                event["event_id"],
                event["type"],
                family,
                event["timestamp"],
                event.get("user_id"),
                event.get("anonymous_id"),
                topic,
                partition,
                offset,
                value,
                consumed - 1,
            )
        )
        keys.append(key)
    events = _event_table(rows, with_payload)
    outside = _outside_time_bounds(events, limits, received)
    if outside:
        for index in outside:
            row = rows[index]
            message = RawMessage(row[9], row[6], row[7], row[8], keys[index])
            rejected.append((message, _out_of_bounds(row[3], limits, received)))
        events = events.filter(pa.array(_keep(len(rows), outside)))
    return ValidatedBatch(
        events=events,
        dead_letters=_dead_letter_table(rejected),
        consumed=consumed,
        dead_letter_kinds=dict(Counter(rejection.kind.value for _, rejection in rejected)),
    )


_FAMILY_NAME = {event_type: family.value for event_type, family in FAMILY_OF_TYPE.items()}


def _event_table(rows: list[tuple], with_payload: bool) -> pa.Table:
    """The rows (the envelope's columns, then the value and the message's index) as
    :data:`EVENT_SCHEMA`, or as :data:`INDEXED_EVENT_SCHEMA` without the payload."""
    fields = list(EVENT_SCHEMA)[:-1]
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in range(len(fields) + 2)]
    arrays = [pa.array(column, type=f.type) for column, f in zip(columns, fields, strict=False)]
    if not with_payload:
        arrays.append(pa.array(columns[-1], type=pa.int32()))
        return pa.Table.from_arrays(arrays, schema=INDEXED_EVENT_SCHEMA)
    # Validation proved the payload is UTF-8 JSON: reinterpret the bytes as text in
    # Arrow (checked in C++) instead of decoding each one in Python.
    arrays.append(pa.array(columns[-2], type=pa.binary()).cast(pa.string()))
    return pa.Table.from_arrays(arrays, schema=EVENT_SCHEMA)


def with_payloads(events: pa.Table, values: pa.Array | pa.ChunkedArray) -> pa.Table:
    """Events returned without their payload (:data:`INDEXED_EVENT_SCHEMA`) with it
    again, taken from the messages' ``values`` in the order they were validated."""
    index = events.column("message_index")
    payload = values.take(index).cast(pa.string())
    return events.drop_columns(["message_index"]).append_column(
        EVENT_SCHEMA.field("payload"), payload
    )


def _dead_letter_table(rejected: list[tuple[RawMessage, Rejection]]) -> pa.Table:
    return pa.Table.from_pylist(
        [
            {
                "source_topic": message.topic,
                "source_partition": message.partition,
                "source_offset": message.offset,
                "message_key": message.key,
                "raw": message.value if message.value is not None else b"",
                "error_kind": rejection.kind.value,
                "reason": rejection.reason,
            }
            for message, rejection in rejected
        ],
        schema=DEAD_LETTER_SCHEMA,
    )


def _invalid(exc: ValidationError, value: bytes) -> Rejection:
    """Pydantic's reason, unless the JSON has a repeated key or a non-number: then
    pydantic judged the last of the values, and that is not what was wrong."""
    rejection = describe_validation_error(exc, value)
    if rejection.kind in (DeadLetterKind.INVALID_EVENT, DeadLetterKind.UNKNOWN_TYPE):
        try:
            problem = _unsound_json(value)
        except (ValueError, RecursionError):
            problem = None
        if problem is not None:
            return Rejection(DeadLetterKind.INVALID_EVENT, problem)
    return rejection


def _repeated_key_or_non_number(value: bytes) -> str | None:
    """For a message pydantic accepted but :func:`_cannot_differ` could not clear."""
    try:
        return _unsound_json(value)
    except (ValueError, RecursionError) as exc:  # pydantic read it; reject what we cannot
        return f"payload: could not be checked for repeated keys ({exc})"


def _cannot_differ(value: bytes, event: dict) -> bool:
    """True if ``value`` certainly has no repeated key and no NaN or Infinity, proved
    without parsing it again; False if that needs :func:`_unsound_json` to tell.

    Pydantic kept each key once, and its output has no key the text lacks (aliases
    are renamed, not added). In the text, each key is followed by a colon; with the
    whitespace removed, that colon directly follows the key's closing quote. So
    ``'":'`` occurs at least once per key in the text (more only for a string that
    holds such a pair): if it occurs as often as the output has keys, none repeats.
    """
    return value.translate(None, _WHITESPACE).count(b'":') == count_keys(event)


_WHITESPACE = b" \t\n\r"
_NESTED = frozenset((dict, list, float))


def count_keys(item: dict | list | float) -> int:
    """Keys in ``item`` (an object, an array or a number) and in every object in it;
    -1 if it holds a non-finite float (pydantic reads ``NaN``, ``Infinity`` and
    ``1e999`` into untyped fields)."""
    kind = type(item)
    if kind is dict:
        count = len(item)
        values = item.values()
    elif kind is float:
        return 0 if math.isfinite(item) else -1
    else:
        count = 0
        values = item
    for value in values:
        if type(value) in _NESTED:
            inner = count_keys(value)
            if inner < 0:
                return -1
            count += inner
    return count


class _Object(list):
    """A JSON object as its (key, value) pairs, repeats included."""


class _NotANumber(str):
    """A number literal no JSON document may hold, as written."""


def _finite_float(text: str) -> float | _NotANumber:
    number = float(text)
    return number if math.isfinite(number) else _NotANumber(text)


def _unsound_json(value: bytes) -> str | None:
    """The first repeated key or non-finite number in ``value``, in text order, as
    'path: problem'; None if there is none. Raises ValueError if ``value`` is not
    UTF-8 JSON. (Integers stay text: nothing here needs their value, and converting
    one of over 4300 digits would raise.)"""
    document = json.loads(
        value.decode("utf-8"),
        object_pairs_hook=_Object,
        parse_constant=_NotANumber,
        parse_float=_finite_float,
        parse_int=str,
        strict=False,
    )
    return _first_unsound(document, ())


def _first_unsound(node: object, path: tuple) -> str | None:
    if isinstance(node, _Object):
        seen = set()
        for key, item in node:
            if key in seen:
                return f"{_dotted((*path, key))}: repeated key"
            seen.add(key)
            found = _first_unsound(item, (*path, key))
            if found is not None:
                return found
    elif isinstance(node, list):
        for index, item in enumerate(node):
            found = _first_unsound(item, (*path, index))
            if found is not None:
                return found
    elif isinstance(node, _NotANumber):
        if node in ("NaN", "Infinity", "-Infinity"):
            return f"{_dotted(path)}: {node} is not a number JSON allows"
        return f"{_dotted(path)}: {node} is beyond the range of a JSON number (a double)"
    return None


def _dotted(path: tuple) -> str:
    return ".".join(str(part) for part in path) or "payload"


def _outside_time_bounds(
    events: pa.Table, limits: ValidationLimits, received: datetime
) -> list[int]:
    """Rows timed before ``ingest.earliest_event_time`` or more than
    ``ingest.max_future_skew`` after ``received``. Compared on the UTC column: in
    Python, each comparison would convert every event time to UTC again."""
    if not events.num_rows:
        return []
    occurred = events.column("occurred_at")
    kind = occurred.type
    try:
        latest = received + limits.max_future_skew
    except OverflowError:  # a skew of millennia: no event is too far ahead
        latest = datetime.max.replace(tzinfo=UTC)
    outside = pc.or_(
        pc.less(occurred, pa.scalar(limits.earliest_event_time, kind)),
        pc.greater(occurred, pa.scalar(latest, kind)),
    )
    if not pc.any(outside).as_py():
        return []
    return pc.indices_nonzero(outside).to_pylist()


def _keep(count: int, dropped: list[int]) -> list[bool]:
    keep = [True] * count
    for index in dropped:
        keep[index] = False
    return keep


def _out_of_bounds(occurred: datetime, limits: ValidationLimits, received: datetime) -> Rejection:
    if occurred < limits.earliest_event_time:
        problem = f"is before ingest.earliest_event_time ({_instant(limits.earliest_event_time)})"
    else:
        problem = (
            f"is more than ingest.max_future_skew ({_duration(limits.max_future_skew)}) "
            f"after it was received ({_instant(received)})"
        )
    return Rejection(DeadLetterKind.INVALID_EVENT, f"timestamp: {_instant(occurred)} {problem}")


def _instant(moment: datetime) -> str:
    """ISO 8601 as sent (with its own offset), Z for UTC."""
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _duration(span: timedelta) -> str:
    """ISO 8601 in hours, as ``ingest.max_future_skew`` is written in the config: PT24H."""
    hours, rest = divmod(span.total_seconds(), 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{hours:g}H" * bool(hours) + f"{minutes:g}M" * bool(minutes)
    return "PT" + text + (f"{seconds:g}S" if seconds or not text else "")


def _oversized(size: int, limit: int) -> Rejection:
    return Rejection(
        DeadLetterKind.OVERSIZED,
        f"payload is {size} bytes; the limit (ingest.max_event_bytes) is {limit}",
    )


def _wrong_topic(event_type: str, family: str, topic: str, expected: str) -> Rejection:
    return Rejection(
        DeadLetterKind.WRONG_TOPIC,
        f"{event_type} is a {family} event but arrived on topic {topic!r}, "
        f"which carries {expected} events",
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
    if error["type"] == "does_not_fit":  # the message shows the value
        return f"{key}: {message}"
    if not key:
        return message
    shown = repr(error.get("input"))
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return f"{key}: {message} (got {shown})"
