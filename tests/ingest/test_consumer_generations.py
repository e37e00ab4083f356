"""Batches polled across a rebalance are discarded, and discarded cheaply: neither
validated nor waited for, so that the poll thread rewinds to the stored offsets at
once (every start polls across the first join). The broker is replaced by a fake
whose poll() runs the assignment callback as kafka-python's IO thread would."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import dataclass

import pyarrow as pa
from kafka import TopicPartition

from cdp.ingest.consumer import EventConsumer, _PendingBatch
from cdp.ingest.validator_process import PendingValidation
from cdp.settings import Settings
from tests.helpers import encode, event

BROWSE = TopicPartition("store.browse", 0)


@dataclass
class _Record:
    offset: int
    key: bytes | None
    value: bytes


class _JoiningKafka:
    """The first poll joins the group (assignment callback inside it) and returns
    records; later polls return them again from where the consumer sought."""

    def __init__(self, owner: EventConsumer, values: list[bytes]) -> None:
        self.owner = owner
        self.records = [_Record(n, None, value) for n, value in enumerate(values)]
        self.polls = 0
        self.seeks: list[str] = []
        self.read_to = 0

    def poll(self, timeout_ms, max_records):
        self.polls += 1
        if self.polls == 1:
            self.owner._partitions_assigned([BROWSE])
        elif self.read_to >= len(self.records):
            self.owner._stop.set()
            return {}
        batch = self.records[self.read_to :]
        self.read_to = len(self.records)
        return {BROWSE: batch}

    def assignment(self):
        return {BROWSE}

    def highwater(self, partition):
        return len(self.records)

    def position(self, partition, timeout_ms=None):
        return self.read_to

    def seek_to_beginning(self, partition):
        self.seeks.append("beginning")
        self.read_to = 0

    def commit_async(self, offsets, callback):
        pass

    def close(self, **kwargs) -> None:
        pass


def test_a_batch_polled_across_the_first_join_is_not_validated_and_is_read_again(memory_db):
    values = [encode(event("page_viewed", f"e-{n}")) for n in range(5)]
    consumer = EventConsumer(Settings(), memory_db)
    kafka = _JoiningKafka(consumer, values)
    consumer._connect = lambda: kafka
    submitted = []
    submit = consumer._submit

    def counting_submit(polled):
        submitted.append(sum(len(records) for records in polled.values()))
        return submit(polled)

    consumer._submit = counting_submit
    stats = consumer.run()
    assert submitted == [5]  # only the batch read again after the rewind
    assert kafka.seeks == ["beginning", "beginning"]  # the assignment, then the rewind
    assert stats.stored == 5
    assert memory_db.execute("SELECT count(DISTINCT event_id) FROM events").fetchone()[0] == 5


def test_the_writer_discards_a_stale_batch_without_waiting_for_its_validation(memory_db):
    settings = Settings(kafka={"max_poll_interval_ms": 600_000})
    consumer = EventConsumer(settings, memory_db)
    try:
        never = Future()  # a validation that would never answer
        validation = PendingValidation(never, (), pa.array([], pa.binary()))
        pending = _PendingBatch(
            consumer._generation - 1, validation, {("store.browse", 0): 3}, 0.0, 3, False
        )
        done = threading.Event()

        def store():
            consumer._store(memory_db.cursor(), pending)
            done.set()

        threading.Thread(target=store, daemon=True).start()
        assert done.wait(5)
        assert consumer._rewind_needed.is_set()
        assert never.cancelled()
        assert consumer.stats.batches == 0
    finally:
        consumer.close()
