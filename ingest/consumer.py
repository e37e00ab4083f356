"""Topics -> DuckDB, exactly once.

How exactly-once holds (see also ``cdp.storage.event_store``):

1. Each polled batch is validated and written together with the next offset of
   every partition in it, in one DuckDB transaction. Kafka's own committed offsets
   are only a courtesy for lag monitoring; the database is the source of truth.
2. On every partition assignment the consumer seeks to the offsets stored in the
   database (or to the beginning of a partition it has never read), so after a
   crash, restart or rebalance, reading resumes exactly after the last stored batch.
3. kafka-python 3 runs rebalance callbacks on its IO thread, which can fire while a
   batch is being written. Writes and the revocation callback share a lock, so a
   partition is handed over only after its in-flight batch committed; and a batch
   polled across a rebalance is dropped and its partitions rewound to the stored
   offsets (it is read again) rather than written by a consumer that may no longer
   own it.
4. ``event_id`` is the primary key of ``events``: a message re-sent by a producer
   is stored once, and its extra copy is recorded in ``duplicate_events``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import duckdb
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from cdp.errors import TransientError
from cdp.ingest.broker import bootstrap_list
from cdp.ingest.events import Family
from cdp.ingest.validation import ValidatedBatch, validate_batch
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


class EventConsumer:
    """One member of the ingest consumer group, writing through its own DuckDB cursor."""

    def __init__(
        self,
        settings: Settings,
        con: duckdb.DuckDBPyConnection,
        *,
        stop: threading.Event | None = None,
        on_batch: Callable[[IngestStats], None] | None = None,
    ) -> None:
        self._settings = settings
        self._con = con.cursor()
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
        self.stats = IngestStats()
        self._consumer = self._connect()

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
        # Taking the lock waits for an in-flight batch to commit before handing over.
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
        """Position each partition just after its last stored batch (caller holds the lock)."""
        offsets = stored_offsets(self._con.cursor(), self._group_id)
        for partition in partitions:
            stored = offsets.get((partition.topic, partition.partition))
            if stored is None:
                self._consumer.seek_to_beginning(partition)
            else:
                self._consumer.seek(partition, stored)

    # -- the loop --------------------------------------------------------------------

    def run(self, *, until_idle: bool = False) -> IngestStats:
        """Consume until stopped (SIGTERM/SIGINT set the stop event) or, with
        ``until_idle``, until caught up with nothing new for ``idle_timeout_s``."""
        ingest = self._settings.ingest
        last_activity = time.monotonic()
        try:
            while not self._stop.is_set():
                generation = self._generation
                polled = self._consumer.poll(
                    timeout_ms=ingest.poll_timeout_ms, max_records=ingest.max_batch_records
                )
                if polled:
                    self._write(polled, generation)
                    last_activity = time.monotonic()
                elif until_idle and time.monotonic() - last_activity >= ingest.idle_timeout_s:
                    if self._joined.is_set() and self._caught_up():
                        break
                    if not self._joined.is_set() and self.stats.elapsed_s > JOIN_TIMEOUT_S:
                        raise TransientError(
                            f"consumer group {self._group_id!r} was not assigned partitions "
                            f"within {JOIN_TIMEOUT_S} s"
                        )
                    last_activity = time.monotonic()
        finally:
            self.close()
        return self.stats

    def _write(self, polled: dict, generation: int) -> None:
        records = [record for batch in polled.values() for record in batch]
        validated = validate_batch(
            records, self._family_by_topic, self._settings.ingest.max_event_bytes
        )
        next_offsets = {
            (tp.topic, tp.partition): batch[-1].offset + 1 for tp, batch in polled.items()
        }
        with self._write_lock:
            if generation != self._generation:
                # A rebalance happened while this batch was being polled or validated,
                # so we may no longer own some of its partitions. Drop it and rewind
                # what we do own to the stored offsets: those records are read again.
                log.info("re-reading a batch polled across a rebalance (%d records)", len(records))
                self._seek_to_stored(list(self._consumer.assignment()))
                return
            result = write_batch(
                self._con,
                validated.events,
                validated.dead_letters,
                group_id=self._group_id,
                next_offsets=next_offsets,
            )
        self.stats.record(validated, result)
        self._commit_to_kafka(next_offsets)
        if self._on_batch:
            self._on_batch(self.stats)

    def _commit_to_kafka(self, next_offsets: dict[tuple[str, int], int]) -> None:
        # Only so that standard tools show the group's lag; never read back.
        offsets = {
            TopicPartition(topic, partition): OffsetAndMetadata(offset, "", -1)
            for (topic, partition), offset in next_offsets.items()
        }
        try:
            self._consumer.commit_async(offsets)
        except KafkaError as exc:  # a rebalance in progress, a broker hiccup: harmless
            log.debug("courtesy commit to Kafka failed: %s", exc)

    def _caught_up(self) -> bool:
        assignment = self._consumer.assignment()
        if not assignment:
            return True
        ends = self._consumer.end_offsets(list(assignment))
        return all(self._consumer.position(tp) >= ends.get(tp, 0) for tp in assignment)

    def close(self) -> None:
        try:
            self._consumer.close(autocommit=False)
        except Exception as exc:  # closing must not mask the loop's own outcome
            log.debug("error while closing the consumer: %s", exc)

    def stop(self) -> None:
        self._stop.set()


class _SeekToStoredOffsets(ConsumerRebalanceListener):
    def __init__(self, owner: EventConsumer) -> None:
        self._owner = owner

    def on_partitions_revoked(self, revoked):  # type: ignore[override]
        self._owner._partitions_revoked(revoked)

    def on_partitions_assigned(self, assigned):  # type: ignore[override]
        self._owner._partitions_assigned(assigned)


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions)) or "none"
