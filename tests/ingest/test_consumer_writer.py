"""The writer thread's transactions: a backlog in row groups, live traffic at once."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import pyarrow as pa
import pytest
from kafka import TopicPartition

import cdp.ingest.consumer as consumer_module
from cdp.errors import IngestError
from cdp.ingest.consumer import _STOP, EventConsumer, _PendingBatch
from cdp.ingest.events import Family
from cdp.ingest.validation import DEFAULT_LIMITS, RawMessage, validate_messages
from cdp.ingest.validator_process import PendingValidation, _Answer
from cdp.settings import Settings
from tests.helpers import encode, event

BROWSE = TopicPartition("store.browse", 0)


@pytest.fixture
def writer(memory_db, monkeypatch):
    # Long enough that a writer waiting for a backlog's next batch is seen waiting.
    monkeypatch.setattr(consumer_module, "_LINGER_S", 60.0)
    consumer = EventConsumer(Settings(), memory_db)
    thread = threading.Thread(target=consumer._write_loop, daemon=True)
    thread.start()
    yield consumer
    consumer._queue.put(_STOP)
    thread.join(timeout=10)
    consumer.close()
    assert not thread.is_alive()


def _polled(consumer: EventConsumer, first: int, records: int, left_behind: bool):
    """Three real events, standing for a poll of ``records`` records."""
    messages = [
        RawMessage(encode(event("page_viewed", f"e-{offset}")), BROWSE.topic, 0, offset)
        for offset in range(first, first + 3)
    ]
    return _PendingBatch(
        consumer._generation,
        consumer._submit({BROWSE: messages}),
        {(BROWSE.topic, 0): first + 3},
        time.monotonic(),
        records,
        left_behind,
    )


def _stored_transactions(consumer: EventConsumer, count: int) -> None:
    deadline = time.monotonic() + 10
    while consumer.stats.batches < count and time.monotonic() < deadline:
        time.sleep(0.01)
    assert consumer.stats.batches == count


def test_a_backlog_waits_for_its_next_batches_until_a_row_group_is_full(writer):
    writer._queue.put(_polled(writer, 0, 100_000, left_behind=True))
    time.sleep(1.0)
    assert writer.stats.batches == 0  # waiting for the rest of the row group
    writer._queue.put(_polled(writer, 3, 30_000, left_behind=True))
    _stored_transactions(writer, 1)
    assert writer.stats.stored == 6


def test_a_poll_that_read_its_partitions_to_the_end_is_stored_at_once(writer):
    writer._queue.put(_polled(writer, 0, 3, left_behind=False))
    _stored_transactions(writer, 1)
    writer._queue.put(_polled(writer, 3, 3, left_behind=False))
    _stored_transactions(writer, 2)
    assert writer.stats.stored == 6


def test_a_batch_that_could_not_reach_the_validator_is_an_ingest_error(writer):
    failed = Future()
    failed.set_exception(OSError("memory file 12 of process 1 is no longer the batch's"))
    with pytest.raises(IngestError, match="could not reach the validator process"):
        writer._validator_answer(PendingValidation(failed, (), pa.array([], pa.binary())))


def test_past_a_row_group_only_batches_already_validated_join_the_transaction(writer):
    # The second batch's validation is held back: the first, a row group on its own,
    # is stored without waiting for it.
    held = Future()
    messages = [RawMessage(encode(event("page_viewed", "held")), BROWSE.topic, 0, 3)]
    waiting = _PendingBatch(
        writer._generation,
        PendingValidation(held, (), pa.array([m.value for m in messages], pa.binary())),
        {(BROWSE.topic, 0): 4},
        time.monotonic(),
        1,
        False,
    )
    writer._queue.put(_polled(writer, 0, 130_000, left_behind=True))
    writer._queue.put(waiting)
    _stored_transactions(writer, 1)
    assert writer.stats.stored == 3
    # As the validator process answers: each event's message, not its payload.
    batch = validate_messages(
        [(m.value, m.topic, m.partition, m.offset, m.key) for m in messages],
        {BROWSE.topic: Family.BROWSE},
        DEFAULT_LIMITS,
        with_payload=False,
    )
    held.set_result(_Answer(batch.consumed, batch.dead_letter_kinds, batch=batch))
    _stored_transactions(writer, 2)
    assert writer.stats.stored == 4


def test_a_batch_that_cannot_get_a_memory_file_is_an_ingest_error(writer, monkeypatch):
    def no_file(name, flags=0):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr("cdp.ingest.validator_process.os.memfd_create", no_file)
    monkeypatch.setattr(writer._validator, "_memory_files", True)
    with pytest.raises(IngestError, match="Too many open files"):
        writer._submit({BROWSE: [RawMessage(b"{}", BROWSE.topic, 0, 0)]})
