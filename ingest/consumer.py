"""Topics -> DuckDB, exactly once.

How exactly-once holds (see also ``cdp.storage.event_store``):

1. Each polled batch is validated and written together with the next offset of
   every partition in it, in one DuckDB transaction. Kafka's own committed offsets
   are only a courtesy for lag monitoring; the database is the source of truth.
2. On every partition assignment the consumer seeks to the offsets stored in the
   database (or to the beginning of a partition it has never read), so after a
   crash, restart or rebalance, reading resumes exactly after the last stored batch.
3. Batches are written by a writer thread while the next one is polled, and
   kafka-python 3 runs rebalance callbacks on its IO thread: either can happen at
   any moment. Writes and the rebalance callbacks share a lock, so a partition is
   handed over only after its in-flight batch committed. Each batch carries the
   assignment generation it was polled in; a batch from an older generation is
   discarded together with every batch queued after it, and the poll thread then
   rewinds to the stored offsets, so those records are read again rather than
   skipped or written by a consumer that may no longer own them.
4. ``event_id`` is the primary key of ``events``: a message re-sent by a producer
   is stored once, and its extra copy is recorded in ``duplicate_events``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import duckdb
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from cdp.errors import TransientError
from cdp.ingest.broker import bootstrap_list
from cdp.ingest.events import Family
from cdp.ingest.validation import (
    PartitionSlice,
    ValidatedBatch,
    start_validator_process,
    validate_slices,
)
from cdp.settings import Settings
from cdp.storage.event_store import WriteResult, stored_offsets, write_batch

log = logging.getLogger(__name__)

# How long --until-idle waits for the first group assignment before giving up.
JOIN_TIMEOUT_S = 60


@dataclass
class IngestStats:
    consumed: int = 0
    stored: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    batches: int = 0
    dead_letter_kinds: dict[str, int] = field(default_factory=dict)
    started_at: float = field(default_factory=time.monotonic)

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started_at

    def record(self, validated: ValidatedBatch, result: WriteResult) -> None:
        self.batches += 1
        self.consumed += validated.consumed
        self.stored += result.stored
        self.duplicates += result.duplicates
        self.dead_lettered += validated.dead_letters.num_rows
        for kind, count in validated.dead_letter_kinds.items():
            self.dead_letter_kinds[kind] = self.dead_letter_kinds.get(kind, 0) + count


@dataclass
class _PendingBatch:
    generation: int
    validated: Future[ValidatedBatch]
    next_offsets: dict[tuple[str, int], int]


_STOP = object()


class EventConsumer:
    """One member of the ingest consumer group.

    Three stages overlap so that a batch is validated and stored while the next is
    polled: the caller's thread polls Kafka; a validator *process* runs pydantic over
    the batch (pure Python, so a thread would contend with polling for the GIL); a
    writer thread stores validated batches in DuckDB (which releases the GIL). At
    most ``_QUEUE_DEPTH`` batches are in flight between polling and storing.
    """

    _QUEUE_DEPTH = 2

    def __init__(
        self,
        settings: Settings,
        con: duckdb.DuckDBPyConnection,
        *,
        stop: threading.Event | None = None,
        on_batch: Callable[[IngestStats], None] | None = None,
    ) -> None:
        self._settings = settings
        self._db = con
        self._stop = stop or threading.Event()
        self._on_batch = on_batch
        self._group_id = settings.kafka.group_id
        topics = settings.topics.by_family()
        self._family_by_topic = {topic: Family(family) for family, topic in topics.items()}
        self._write_lock = threading.Lock()
        self._generation = 0
        # Set by the first assignment callback: before it, "no records" means "not
        # joined yet", not "caught up".
        self._joined = threading.Event()
        # Set once the consumer has reached the end of every partition it owns (for
        # `cdp run`'s first build, which should see the backlog, not a part of it).
        self.caught_up = threading.Event()
        # Set by the writer when it discarded a batch polled across a rebalance; from
        # then on it discards everything until the poll thread has rewound.
        self._rewind_needed = threading.Event()
        self._queue: queue.Queue = queue.Queue(maxsize=self._QUEUE_DEPTH)
        self._writer_error: BaseException | None = None
        self._stored_offsets: dict[tuple[str, int], int] = {}
        self._committed_to_kafka: dict[tuple[str, int], int] = {}
        self.stats = IngestStats()
        # Started before the Kafka client, so its start-up is not paid while holding
        # partitions.
        self._validator = start_validator_process()
        try:
            self._consumer = self._connect()
        except BaseException:
            self._validator.shutdown(cancel_futures=True)
            raise

    def _connect(self) -> KafkaConsumer:
        kafka = self._settings.kafka
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap_list(kafka.bootstrap_servers),
            group_id=self._group_id,
            client_id=kafka.client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            check_crcs=True,
            max_poll_records=self._settings.ingest.max_batch_records,
            session_timeout_ms=kafka.session_timeout_ms,
            heartbeat_interval_ms=kafka.heartbeat_interval_ms,
            max_poll_interval_ms=kafka.max_poll_interval_ms,
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        consumer.subscribe(topics=list(self._family_by_topic), listener=_SeekToStoredOffsets(self))
        return consumer

    # -- rebalance callbacks (run on kafka-python's IO thread) -----------------------

    def _partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # Taking the lock waits for an in-flight write to commit before handing over;
        # the new generation makes the writer discard batches polled before it.
        with self._write_lock:
            self._generation += 1
        log.info("partitions revoked: %s", _names(revoked))

    def _partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        with self._write_lock:
            self._generation += 1
            self._seek_to_stored(assigned)
        self._joined.set()
        log.info("partitions assigned: %s", _names(assigned))

    def _seek_to_stored(self, partitions: list[TopicPartition]) -> None:
        """Position each partition just after its last stored batch."""
        offsets = stored_offsets(self._db.cursor(), self._group_id)
        for partition in partitions:
            stored = offsets.get((partition.topic, partition.partition))
            if stored is None:
                self._consumer.seek_to_beginning(partition)
            else:
                self._consumer.seek(partition, stored)

    # -- the poll thread -------------------------------------------------------------

    def run(self, *, until_idle: bool = False) -> IngestStats:
        """Consume until stopped (SIGTERM/SIGINT set the stop event) or, with
        ``until_idle``, until caught up with nothing new for ``idle_timeout_s``.
        Batches already polled are stored before it returns."""
        ingest = self._settings.ingest
        writer = threading.Thread(target=self._write_loop, name="cdp-writer", daemon=True)
        writer.start()
        last_activity = time.monotonic()
        try:
            while not self._stop.is_set() and self._writer_error is None:
                if self._rewind_needed.is_set():
                    self._rewind()
                self._commit_to_kafka()
                generation = self._generation
                polled = self._consumer.poll(
                    timeout_ms=ingest.poll_timeout_ms, max_records=ingest.max_batch_records
                )
                if polled:
                    self._enqueue(polled, generation)
                    last_activity = time.monotonic()
                elif until_idle and time.monotonic() - last_activity >= ingest.idle_timeout_s:
                    self._queue.join()
                    if self._joined.is_set() and not self._rewind_needed.is_set():
                        if self._caught_up():
                            break
                    elif self.stats.elapsed_s > JOIN_TIMEOUT_S:
                        raise TransientError(
                            f"consumer group {self._group_id!r} was not assigned partitions "
                            f"within {JOIN_TIMEOUT_S} s"
                        )
                    last_activity = time.monotonic()
                elif (
                    not self.caught_up.is_set()
                    and self._joined.is_set()
                    and time.monotonic() - last_activity >= ingest.idle_timeout_s
                ):
                    self._queue.join()
                    if not self._rewind_needed.is_set() and self._caught_up():
                        self.caught_up.set()
                    last_activity = time.monotonic()
        finally:
            self._queue.put(_STOP)
            writer.join()
            self._commit_to_kafka()
            self.close()
        if self._writer_error is not None:
            raise self._writer_error
        return self.stats

    def _enqueue(self, polled: dict, generation: int) -> None:
        slices = [
            PartitionSlice.from_records(tp.topic, tp.partition, records)
            for tp, records in polled.items()
        ]
        validated = self._validator.submit(
            validate_slices, slices, self._family_by_topic, self._settings.ingest.max_event_bytes
        )
        next_offsets = {
            (tp.topic, tp.partition): batch[-1].offset + 1 for tp, batch in polled.items()
        }
        # Even when stopping: a polled batch is stored, unless the writer has failed.
        while self._writer_error is None:
            try:
                self._queue.put(_PendingBatch(generation, validated, next_offsets), timeout=1)
                return
            except queue.Full:
                continue

    def _rewind(self) -> None:
        """After the writer discarded batches polled across a rebalance: wait until it
        is idle, then re-read from the stored offsets of what we own now."""
        self._queue.join()
        with self._write_lock:
            self._seek_to_stored(list(self._consumer.assignment()))
            self._rewind_needed.clear()
        log.info("re-reading from stored offsets after a rebalance")

    def _commit_to_kafka(self) -> None:
        # Only so that standard tools show the group's lag; never read back. Done on
        # the poll thread because kafka-python's consumer is not thread-safe.
        # The writer thread adds to _stored_offsets; dict() copies it in one step under
        # the GIL, where iterating it directly could see it change size.
        stored = dict(self._stored_offsets)
        pending = {k: v for k, v in stored.items() if self._committed_to_kafka.get(k) != v}
        if not pending:
            return
        offsets = {
            TopicPartition(topic, partition): OffsetAndMetadata(offset, "", -1)
            for (topic, partition), offset in pending.items()
        }
        try:
            self._consumer.commit_async(offsets)
            self._committed_to_kafka.update(pending)
        except KafkaError as exc:  # a rebalance in progress, a broker hiccup: harmless
            log.debug("courtesy commit to Kafka failed: %s", exc)

    def _caught_up(self) -> bool:
        assignment = self._consumer.assignment()
        if not assignment:
            return True
        ends = self._consumer.end_offsets(list(assignment))
        return all(self._consumer.position(tp) >= ends.get(tp, 0) for tp in assignment)

    # -- the writer thread -----------------------------------------------------------

    def _write_loop(self) -> None:
        con = self._db.cursor()
        try:
            while True:
                item = self._queue.get()
                try:
                    if item is _STOP:
                        return
                    if self._writer_error is None:
                        self._store(con, item)
                finally:
                    self._queue.task_done()
        except BaseException as exc:  # surfaced by run() on the poll thread
            self._writer_error = exc
            self._stop.set()
            _drain(self._queue)
        finally:
            con.close()

    def _store(self, con: duckdb.DuckDBPyConnection, pending: _PendingBatch) -> None:
        with self._write_lock:
            if self._rewind_needed.is_set() or pending.generation != self._generation:
                # Polled across a rebalance: we may no longer own some partitions, and
                # later batches continue from positions past this one. Discard it and
                # all that follow until the poll thread rewinds to the stored offsets.
                self._rewind_needed.set()
                return
            validated = pending.validated.result()
            result = write_batch(
                con,
                validated.events,
                validated.dead_letters,
                group_id=self._group_id,
                next_offsets=pending.next_offsets,
            )
            self._stored_offsets.update(pending.next_offsets)
        self.stats.record(validated, result)
        log.debug("stored a batch: %d consumed so far", self.stats.consumed)
        if self._on_batch:
            self._on_batch(self.stats)

    def close(self) -> None:
        try:
            self._consumer.close(autocommit=False)
        except Exception as exc:  # closing must not mask the loop's own outcome
            log.debug("error while closing the consumer: %s", exc)
        self._validator.shutdown(cancel_futures=True)


def _drain(pending: queue.Queue) -> None:
    """Empty the queue after a writer failure so the poll thread never blocks on it."""
    while True:
        try:
            pending.get_nowait()
            pending.task_done()
        except queue.Empty:
            return


class _SeekToStoredOffsets(ConsumerRebalanceListener):
    def __init__(self, owner: EventConsumer) -> None:
        self._owner = owner

    def on_partitions_revoked(self, revoked):  # type: ignore[override]
        self._owner._partitions_revoked(revoked)

    def on_partitions_assigned(self, assigned):  # type: ignore[override]
        self._owner._partitions_assigned(assigned)


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions)) or "none"
