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

import multiprocessing
import os
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import pyarrow as pa
from kafka.consumer.fetcher import ConsumerRecord
from pydantic import ValidationError

from cdp.ingest.events import EVENT_ADAPTER, FAMILY_OF_TYPE, Family, UnknownEventType
from cdp.settings import IngestSettings


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

    @classmethod
    def from_settings(cls, ingest: IngestSettings) -> ValidationLimits:
        return cls(ingest.max_event_bytes, ingest.earliest_event_time, ingest.max_future_skew)


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
    # This loop runs once per message on the ingest hot path: one tuple per accepted
    # event, transposed into columns once at the end.
    validate = EVENT_ADAPTER.validator.validate_json
    family_of = _FAMILY_NAME
    expected_of = {topic: family.value for topic, family in (family_by_topic or {}).items()}
    rows: list[tuple] = []
    rejected: list[tuple[RawMessage | ConsumerRecord, Rejection]] = []
    consumed = 0
    for message in messages:
        consumed += 1
        value = message.value
        if not value:
            rejected.append(
                (message, Rejection(DeadLetterKind.EMPTY, "empty message (no value bytes)"))
            )
            continue
        if len(value) > max_event_bytes:
            rejected.append((message, _oversized(len(value), max_event_bytes)))
            continue
        try:
            event = validate(value)
        except ValidationError as exc:
            rejected.append((message, describe_validation_error(exc, value)))
            continue
        family = family_of[event["type"]]
        expected = expected_of.get(message.topic)
        if expected is not None and family != expected:
            rejected.append((message, _wrong_topic(event["type"], family, message.topic, expected)))
            continue
        rows.append(
            (
                event["event_id"], event["type"], family, event["timestamp"],
                event.get("user_id"), event.get("anonymous_id"),
                message.topic, message.partition, message.offset, value,
            )
        )  # fmt: skip
    return ValidatedBatch(
        events=_event_table(rows),
        dead_letters=_dead_letter_table(rejected),
        consumed=consumed,
        dead_letter_kinds=dict(Counter(rejection.kind.value for _, rejection in rejected)),
    )


_FAMILY_NAME = {event_type: family.value for event_type, family in FAMILY_OF_TYPE.items()}


def _event_table(rows: list[tuple]) -> pa.Table:
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in EVENT_SCHEMA]
    fields = list(EVENT_SCHEMA)[:-1]
    arrays = [pa.array(column, type=f.type) for column, f in zip(columns[:-1], fields, strict=True)]
    # Validation proved the payload is UTF-8 JSON: reinterpret the bytes as text in
    # Arrow (checked in C++) instead of decoding each one in Python.
    arrays.append(pa.array(columns[-1], type=pa.binary()).cast(pa.string()))
    return pa.Table.from_arrays(arrays, schema=EVENT_SCHEMA)


def _dead_letter_table(rejected: list[tuple[RawMessage | ConsumerRecord, Rejection]]) -> pa.Table:
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


@dataclass(frozen=True, slots=True)
class PartitionSlice:
    """Polled records of one partition as three lists: what the validator process
    receives (pickling lists of ints and bytes is a few memory copies)."""

    topic: str
    partition: int
    offsets: list[int]
    keys: list[bytes | None]
    values: list[bytes | None]

    @classmethod
    def from_records(cls, topic: str, partition: int, records: list) -> PartitionSlice:
        return cls(
            topic,
            partition,
            [record.offset for record in records],
            [record.key for record in records],
            [record.value for record in records],
        )


def validate_slices(
    slices: list[PartitionSlice], family_by_topic: Mapping[str, Family], max_event_bytes: int
) -> ValidatedBatch:
    """``validate_batch`` over polled partitions; runs in the validator process."""
    return validate_batch(
        (
            RawMessage(value, part.topic, part.partition, offset, key)
            for part in slices
            for offset, key, value in zip(part.offsets, part.keys, part.values, strict=True)
        ),
        family_by_topic,
        max_event_bytes,
    )


def start_validator_process() -> ProcessPoolExecutor:
    """A one-process pool for ``validate_slices``, already started.

    Validation is pure Python; run in the process that also polls Kafka or writes
    DuckDB, it would contend with them for the GIL. Spawned, not forked: the caller
    may already run kafka-python's and DuckDB's threads. The pool starts its process
    on first use, so pay the ~1 s of imports here rather than mid-stream.
    """
    pool = ProcessPoolExecutor(
        max_workers=1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_exit_with_parent,
        initargs=(os.getpid(),),
    )
    try:
        pool.submit(validate_slices, [], {}, 0).result()
    except BaseException:
        pool.shutdown(cancel_futures=True)
        raise
    return pool


def _exit_with_parent(parent_pid: int) -> None:
    """The validator process's initializer: exit once the process that started it is
    gone. A parent killed outright (``kill -9``, the OOM killer) never shuts its pool
    down, and the worker, blocked reading its call queue, would otherwise live on."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, name="cdp-exit-with-parent", daemon=True).start()


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
