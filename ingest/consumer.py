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
4. A message re-sent by a producer (same ``event_id``) within
   ``ingest.duplicate_window`` of event time is stored once, and its extra copy is
   recorded in ``duplicate_events`` (``cdp.storage.event_store``).

Riding out the broker (see the README's "Operating cdp"): kafka-python retries on
its own, but some calls raise after their timeout. Every call to the broker here is
bounded and caught; an unreachable broker is logged once when it goes and once when
it is back, and ingest resumes from the stored offsets. Whether we caught up is
decided from the fetch responses' high watermark together with a bounded ListOffsets
probe (the bundled broker under-reports the log end in ListOffsets, real Kafka
answers it exactly; the larger of the two is right on both). A stored offset past a
partition's end (its data was lost) or before its start (retention) stops ingest
with :class:`~cdp.errors.OffsetOutOfRange` unless ``ingest.offset_reset`` says
what to do.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import BrokenExecutor
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError, KafkaTimeoutError, OffsetOutOfRangeError
from kafka.structs import OffsetAndMetadata

from cdp.errors import IngestError, OffsetOutOfRange, TransientError
from cdp.ingest.broker import BOOTSTRAP_TIMEOUT_MS, bootstrap_list, describe_kafka_error
from cdp.ingest.events import Family
from cdp.ingest.stats import IngestStats  # defined apart, for cdp load without kafka-python
from cdp.ingest.validation import ValidatedBatch, ValidationLimits
from cdp.ingest.validator_process import PendingValidation, ValidatorProcess
from cdp.settings import Settings
from cdp.storage.event_store import (
    reset_stored_offsets,
    stored_offsets,
    write_batch,
)

log = logging.getLogger(__name__)

# How long --until-idle waits for the first group assignment before giving up.
JOIN_TIMEOUT_S = 60
# Bound on each call that asks the broker something outside poll(): a broker that
# accepts connections but does not answer (paused, partitioned) costs this, not
# kafka-python's 30 s request timeout.
PROBE_TIMEOUT_MS = 5000
# How often the broker and the validator process are checked while records flow,
# and once idle for ingest.idle_timeout_s (then whether we caught up, too).
CHECK_EVERY_S = 5.0
IDLE_CHECK_EVERY_S = 1.0
# A courtesy commit to Kafka with no answer after this long is sent again (its answer
# may never come, e.g. when the coordinator moved during an outage).
COMMIT_ANSWER_S = 10.0


@dataclass
class _PendingBatch:
    generation: int
    validated: PendingValidation
    next_offsets: dict[tuple[str, int], int]
    polled_at: float
    records: int
    # Whether the partitions polled held more records than the poll took (a backlog).
    left_behind: bool


_STOP = object()

# Rows in a DuckDB row group, and how long the writer waits for the next batch of a
# backlog before it stores a transaction smaller than that.
_ROW_GROUP = 122_880
_LINGER_S = 0.5


@dataclass
class BrokerHealth:
    """What the poll thread last learned about the broker, for logs, /healthz and
    /metrics. Written by the poll thread only; read by others without a lock (each
    field is replaced in one step)."""

    reachable: bool = True
    unreachable_since: float | None = None  # time.monotonic()
    last_reason: str = ""
    # (topic, partition) -> records the broker has that are not stored yet.
    lag: dict[tuple[str, int], int] = field(default_factory=dict)


class EventConsumer:
    """One member of the ingest consumer group.

    Three stages overlap so that a batch is validated and stored while the next is
    polled: the caller's thread polls Kafka; a validator *process* runs pydantic over
    the batch (pure Python, so a thread would contend with polling for the GIL); a
    writer thread stores validated batches in DuckDB (which releases the GIL). At
    most ``_QUEUE_DEPTH`` polls are in flight between polling and storing. In a
    backlog, the writer stores them in transactions of a DuckDB row group (122,880
    rows, written without the WAL; a poll is ~15k records); live traffic is stored
    as it comes (see :meth:`_write_loop`).

    The Kafka client is created by :meth:`run`, so that a broker that is down at
    start is waited for like one that goes down later.
    """

    _QUEUE_DEPTH = 12

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
        self.on_batch = on_batch
        self._group_id = settings.kafka.group_id
        topics = settings.topics.by_family()
        self._family_by_topic = {topic: Family(family) for family, topic in topics.items()}
        self._limits = ValidationLimits.from_settings(settings.ingest)
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
        # Offsets Kafka confirmed (set by commit callbacks on kafka-python's IO thread)
        # and those sent but not answered yet.
        self._committed_to_kafka: dict[tuple[str, int], int] = {}
        self._commits_in_flight: dict[tuple[str, int], tuple[int, float]] = {}
        # Partitions assigned with a stored offset whose range is not checked yet
        # (replaced by rebalance callbacks on kafka-python's IO thread, hence the lock).
        self._unverified: dict[TopicPartition, int] = {}
        self._unverified_lock = threading.Lock()
        # Log ends seen at the previous check (caught up under steady traffic).
        self._previous_ends: dict[TopicPartition, int] = {}
        # When the poll loop last went round: /healthz tells a wedged consumer by it.
        self.loop_turned_at = time.monotonic()
        self.stats = IngestStats()
        self.broker = BrokerHealth()
        # Started before the Kafka client, so its start-up is not paid while holding
        # partitions.
        self._validator = ValidatorProcess()
        self._validator_failed = False
        self._consumer: KafkaConsumer | None = None

    @property
    def batches_in_flight(self) -> int:
        """Batches polled but not yet stored (queued, being validated or written)."""
        return self._queue.unfinished_tasks

    def _connect(self) -> KafkaConsumer:
        kafka = self._settings.kafka
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap_list(kafka.bootstrap_servers),
            group_id=self._group_id,
            client_id=kafka.client_id,
            enable_auto_commit=False,
            # Never reset silently: partitions never read are sought to their start
            # explicitly, and an out-of-range stored offset is ours to report.
            auto_offset_reset="none",
            check_crcs=True,
            max_poll_records=self._settings.ingest.max_batch_records,
            session_timeout_ms=kafka.session_timeout_ms,
            heartbeat_interval_ms=kafka.heartbeat_interval_ms,
            max_poll_interval_ms=kafka.max_poll_interval_ms,
            fetch_max_bytes=64 * 1024 * 1024,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            # A port that accepts connections but does not speak Kafka: fail this
            # attempt in seconds (the caller retries) rather than kafka-python's 30 s.
            bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
        )
        consumer.subscribe(topics=list(self._family_by_topic), listener=_SeekToStoredOffsets(self))
        return consumer

    def _connect_patiently(self, until_idle: bool) -> KafkaConsumer | None:
        """The Kafka client, once the broker answers; None if stopped meanwhile.

        A service waits for the broker as long as it takes, at start as later (it
        says so once); ``--until-idle`` gives up after
        ``ingest.broker_unreachable_timeout_s`` with exit status 1.
        """
        while not self._stop.is_set():
            try:
                consumer = self._connect()
            except (KafkaError, TransientError) as exc:
                self._broker_unreachable(exc, until_idle)
                self._stop.wait(CHECK_EVERY_S)
                continue
            self._broker_reachable()
            return consumer
        return None

    # -- the broker's health (poll thread) -------------------------------------------

    def _broker_unreachable(self, exc: BaseException, give_up: bool) -> None:
        now = time.monotonic()
        reason = describe_kafka_error(exc) if isinstance(exc, KafkaError) else str(exc)
        if self.broker.reachable:
            self.broker.unreachable_since = now
            self.broker.reachable = False
            log.warning(
                "Kafka broker %s unreachable (%s); waiting for it, ingest resumes where it stopped",
                self._settings.kafka.bootstrap_servers,
                reason,
            )
        self.broker.last_reason = reason
        limit = self._settings.ingest.broker_unreachable_timeout_s
        since = self.broker.unreachable_since or now
        if give_up and now - since >= limit:
            raise TransientError(
                f"the Kafka broker at {self._settings.kafka.bootstrap_servers} has not answered "
                f"for {now - since:.0f} s ({reason}); --until-idle gives up after "
                f"ingest.broker_unreachable_timeout_s = {limit:g} s. Everything read before "
                "is stored; run it again once the broker is back"
            )

    def _broker_reachable(self) -> None:
        if not self.broker.reachable:
            down = time.monotonic() - (self.broker.unreachable_since or time.monotonic())
            log.warning("Kafka broker reachable again after %.0f s; ingest resumes", down)
        self.broker.reachable = True
        self.broker.unreachable_since = None

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
        assert self._consumer is not None
        offsets = stored_offsets(self._db.cursor(), self._group_id)
        unverified = {}
        for partition in partitions:
            stored = offsets.get((partition.topic, partition.partition))
            if stored is None:
                self._consumer.seek_to_beginning(partition)
            else:
                self._consumer.seek(partition, stored)
                unverified[partition] = stored
        with self._unverified_lock:
            self._unverified = unverified

    # -- the poll thread -------------------------------------------------------------

    def run(self, *, until_idle: bool = False) -> IngestStats:
        """Consume until stopped (SIGTERM/SIGINT set the stop event) or, with
        ``until_idle``, until caught up with nothing new for ``idle_timeout_s``.
        Batches already polled are stored before it returns."""
        writer = threading.Thread(target=self._write_loop, name="cdp-writer", daemon=True)
        writer.start()
        try:
            self._consumer = self._connect_patiently(until_idle)
            if self._consumer is not None:
                with _start_up_heap_frozen():
                    self._poll_loop(until_idle)
        finally:
            while writer.is_alive():  # a writer that failed has stopped reading the queue
                with contextlib.suppress(queue.Full):
                    self._queue.put(_STOP, timeout=0.5)
                    break
            writer.join()
            if self._consumer is not None:
                self._commit_to_kafka()
            self.close()
        if self._writer_error is not None:
            raise self._writer_error
        return self.stats

    def _poll_loop(self, until_idle: bool) -> None:
        assert self._consumer is not None
        ingest = self._settings.ingest
        last_activity = last_check = time.monotonic()
        in_backlog = False
        while not self._stop.is_set() and self._writer_error is None:
            self.loop_turned_at = time.monotonic()
            if self._rewind_needed.is_set():
                self._rewind()
            self._commit_to_kafka()
            generation = self._generation
            records, pending, failure = 0, None, None
            # In a backlog, a poll returns a full batch at once: its records (a
            # ConsumerRecord each) are packed for the validator and freed before the
            # collector may run, which would otherwise walk them over and over while
            # they are alive. Not when the last poll read to the end: the next one may
            # wait up to poll_timeout_ms, and the collector is the whole process's.
            with _collector_paused() if in_backlog else contextlib.nullcontext():
                try:
                    polled = self._consumer.poll(
                        timeout_ms=ingest.poll_timeout_ms, max_records=ingest.max_batch_records
                    )
                except KafkaError as exc:
                    failure = exc
                else:
                    records = sum(len(batch) for batch in polled.values())
                    if records and self._generation == generation:
                        pending = self._pending(polled, generation, records)
                    del polled
            if failure is not None:
                self._poll_failed(failure, until_idle)
                in_backlog = False
                continue
            in_backlog = pending is not None and pending.left_behind
            if records:
                # Not a sign the broker is back: kafka-python hands out records it
                # fetched before the outage. Only a round trip says so (_probe, every
                # CHECK_EVERY_S); taking polled records for one made a loaded machine
                # log "unreachable" / "reachable again after 0 s" a dozen times.
                if pending is None:
                    # Polled across a rebalance (the first join too): the writer would
                    # discard it, after validating it, and all polled until a rewind.
                    # Skip both and rewind at the top of the next turn.
                    self._rewind_needed.set()
                else:
                    self._enqueue(pending)
                last_activity = time.monotonic()
            self._check_stored_offsets_in_range()
            now = time.monotonic()
            idle = not records and now - last_activity >= ingest.idle_timeout_s
            if now - last_check < (IDLE_CHECK_EVERY_S if idle else CHECK_EVERY_S):
                continue
            # Due for a check, busy or idle: is the broker there, what is the lag, have
            # we caught up? Once idle, also: is everything stored, is the validator
            # alive (a busy validator shows it with every batch)?
            last_check = now
            if idle:
                self._queue.join()
                self._check_validator()
            if self._caught_up(until_idle, exact=idle):
                self.caught_up.set()
                if until_idle and idle:
                    return
            if until_idle and not self._joined.is_set() and self.stats.elapsed_s > JOIN_TIMEOUT_S:
                raise TransientError(
                    f"consumer group {self._group_id!r} was not assigned partitions "
                    f"within {JOIN_TIMEOUT_S} s"
                )

    def _poll_failed(self, exc: KafkaError, until_idle: bool) -> None:
        if isinstance(exc, OffsetOutOfRangeError):
            self._offsets_out_of_range(_out_of_range_offsets(exc))
            return
        if not exc.retriable and not isinstance(exc, KafkaTimeoutError):
            # Not an outage: waiting would not help (no authorization, a corrupt
            # record, our rebalance callback failing).
            raise IngestError(f"Kafka refused to serve ingest: {describe_kafka_error(exc)}")
        self._broker_unreachable(exc, until_idle)
        self._stop.wait(1.0)

    def _pending(self, polled: dict, generation: int, records: int) -> _PendingBatch:
        """A poll's records handed to the validator, as the writer will take them."""
        polled_at = time.monotonic()
        validated = self._submit(polled)
        next_offsets = {
            (tp.topic, tp.partition): batch[-1].offset + 1 for tp, batch in polled.items()
        }
        return _PendingBatch(
            generation, validated, next_offsets, polled_at, records, self._left_behind(polled)
        )

    def _enqueue(self, pending: _PendingBatch) -> None:
        # Even when stopping: a polled batch is stored, unless the writer has failed.
        while self._writer_error is None:
            try:
                self._queue.put(pending, timeout=1)
                return
            except queue.Full:
                continue

    def _left_behind(self, polled: dict) -> bool:
        """Whether a partition just polled holds records the poll did not return: its
        position (past the records returned and any transaction marker) is short of
        the high watermark of its last fetch. A backlog, for the writer (see
        :meth:`_write_loop`); False where not known, e.g. revoked meanwhile."""
        assert self._consumer is not None
        for tp in polled:
            try:
                highwater = self._consumer.highwater(tp)
                position = self._consumer.position(tp, timeout_ms=0)
            except KafkaError:
                continue
            if highwater is not None and position is not None and position < highwater:
                return True
        return False

    def _rewind(self) -> None:
        """After the writer discarded batches polled across a rebalance: wait until it
        is idle, then re-read from the stored offsets of what we own now."""
        assert self._consumer is not None
        self._queue.join()
        with self._write_lock:
            self._seek_to_stored(list(self._consumer.assignment()))
            self._rewind_needed.clear()
        log.info("re-reading from stored offsets after a rebalance")

    def _commit_to_kafka(self) -> None:
        # Only so that standard tools (and `cdp status`) show the group's lag; never
        # read back. Done on the poll thread because kafka-python's consumer is not
        # thread-safe (its callbacks run on this thread too, inside poll()). An offset
        # counts as committed when Kafka confirms it; one that failed, e.g. during an
        # outage, or that got no answer within COMMIT_ANSWER_S, is sent again.
        # The writer thread adds to _stored_offsets; dict() copies it in one step under
        # the GIL, where iterating it directly could see it change size.
        assert self._consumer is not None
        now = time.monotonic()
        stored = dict(self._stored_offsets)
        pending = {}
        for key, offset in stored.items():
            if self._committed_to_kafka.get(key) == offset:
                continue
            in_flight = self._commits_in_flight.get(key)
            if in_flight and in_flight[0] == offset and now - in_flight[1] < COMMIT_ANSWER_S:
                continue
            pending[key] = offset
        if not pending:
            return
        offsets = {
            TopicPartition(topic, partition): OffsetAndMetadata(offset, "", -1)
            for (topic, partition), offset in pending.items()
        }
        self._commits_in_flight.update({key: (offset, now) for key, offset in pending.items()})

        def confirmed(_offsets: object, response: object) -> None:
            for key, offset in pending.items():
                in_flight = self._commits_in_flight.get(key)
                if in_flight and in_flight[0] == offset:
                    del self._commits_in_flight[key]
            if isinstance(response, BaseException):
                log.debug("courtesy commit to Kafka failed (sent again later): %s", response)
            else:
                self._committed_to_kafka.update(pending)

        try:
            self._consumer.commit_async(offsets, callback=confirmed)
        except KafkaError as exc:  # a rebalance in progress, a broker hiccup: retried
            confirmed(offsets, exc)

    def _caught_up(self, until_idle: bool, *, exact: bool) -> bool:
        """Whether every owned partition is read to its end; also the broker probe
        and the lag for /metrics.

        ``exact`` (idle, everything stored): the position equals the end. Under
        steady traffic the end moves on, so there it means the position reached the
        end seen at the previous check: the backlog that was there is read."""
        assert self._consumer is not None
        if not self._joined.is_set() or self._rewind_needed.is_set():
            self._probe(until_idle, [])
            return False
        assignment = list(self._consumer.assignment())
        if not assignment:
            # A group's first assignment can come before the topics' metadata and hold
            # nothing; "caught up" then would start the first build on an empty
            # database (seen once in a loaded test run). cdp is a group's one consumer,
            # so owning nothing is never the settled state.
            self._probe(until_idle, [])
            return False
        ends = self._probe(until_idle, assignment)
        if ends is None:
            return False
        lag, reached, previous = {}, True, self._previous_ends
        self._previous_ends = {}
        for tp in assignment:
            try:
                position = self._consumer.position(tp, timeout_ms=0)
                highwater = self._consumer.highwater(tp)
            except KafkaError:  # revoked meanwhile: the next check sees the new assignment
                return False
            if position is None or highwater is None:
                return False  # no fetch answered for it yet: its end is not known
            end = max(ends.get(tp) or 0, highwater)
            self._previous_ends[tp] = end
            lag[(tp.topic, tp.partition)] = max(end - position, 0)
            reached = reached and tp in previous and position >= previous[tp]
        self.broker.lag = lag
        return not any(lag.values()) or (not exact and reached)

    def _probe(
        self, until_idle: bool, assignment: list[TopicPartition]
    ) -> dict[TopicPartition, int] | None:
        """Ask the broker, within ``PROBE_TIMEOUT_MS``, for the end offsets of what we
        own (or just for metadata); None when it does not answer."""
        assert self._consumer is not None
        try:
            if assignment:
                ends = self._consumer.end_offsets(assignment, timeout_ms=PROBE_TIMEOUT_MS)
            else:
                self._consumer.bootstrap(timeout_ms=PROBE_TIMEOUT_MS, refresh=True)
                ends = {}
        except KafkaError as exc:
            self._broker_unreachable(exc, until_idle)
            return None
        self._broker_reachable()
        return ends

    def _check_validator(self) -> None:
        """Fail now, not at the next batch, if the validator process died: a service
        that is idle must still notice (the pool marks itself broken at once)."""
        self._validator_answer(self._submit({}))

    def _submit(self, polled: dict[TopicPartition, list]) -> PendingValidation:
        try:
            return self._validator.validate(
                ((tp.topic, tp.partition, records) for tp, records in polled.items()),
                self._family_by_topic,
                self._limits,
            )
        except BrokenExecutor as exc:
            self._validator_failed = True
            raise IngestError(f"the validator process died ({exc})") from None
        except OSError as exc:  # no memory file for the batch (too many open files)
            raise _batch_not_delivered(exc) from None

    # -- offsets outside the log -------------------------------------------------------

    def _check_stored_offsets_in_range(self) -> None:
        """A stored offset past the partition's end means the broker lost the data we
        stored from (a topic recreated, an in-memory broker restarted): reading on
        would skip every new message up to it. The end is the fetch high watermark:
        the bundled broker's ListOffsets under-reports it."""
        if not self._unverified:
            return
        assert self._consumer is not None
        beyond = {}
        with self._unverified_lock:
            for tp, stored in list(self._unverified.items()):
                try:
                    end = self._consumer.highwater(tp)
                except KafkaError:  # no longer assigned: checked at its next assignment
                    del self._unverified[tp]
                    continue
                if end is None:
                    continue  # no fetch answered for it yet
                del self._unverified[tp]
                if stored > end:
                    beyond[tp] = (stored, end)
        if beyond:
            self._offsets_out_of_range(beyond)

    def _offsets_out_of_range(self, found: dict[TopicPartition, tuple[int, int | None]]) -> None:
        assert self._consumer is not None
        policy = self._settings.ingest.offset_reset
        described = "; ".join(
            f"topic {tp.topic!r} partition {tp.partition}: stored offset {stored} is "
            + (f"past the partition's end ({end})" if end is not None else "outside its log")
            for tp, (stored, end) in sorted(found.items())
        )
        if policy == "none":
            raise OffsetOutOfRange(
                f"{described}. The broker no longer has the data these offsets point into "
                "(the topic was recreated or the broker lost its data, or retention deleted "
                "it unread). Nothing was skipped or stored. To re-read these partitions from "
                "their start, run once with --offset-reset earliest (or "
                "CDP_INGEST__OFFSET_RESET=earliest); 'latest' skips to their end"
            )
        # The new position is stored at once, in the database that is the truth for
        # where to read: a reset applies once and for all, not only until a restart.
        new_offsets: dict[tuple[str, int], int | None] = {}
        with self._write_lock:
            for tp in found:
                try:
                    if policy == "earliest":
                        self._consumer.seek_to_beginning(tp)
                        new_offsets[(tp.topic, tp.partition)] = None  # its start, whatever it is
                    else:
                        end = self._consumer.highwater(tp)
                        if end is None:
                            end = self._consumer.end_offsets([tp], timeout_ms=PROBE_TIMEOUT_MS)[tp]
                        self._consumer.seek(tp, end)
                        new_offsets[(tp.topic, tp.partition)] = end
                except KafkaError as exc:  # revoked meanwhile: its next owner checks it
                    log.info("offset reset of %s skipped: %s", _names([tp]), exc)
            with self._db.cursor() as cursor:
                reset_stored_offsets(cursor, self._group_id, new_offsets)
        log.warning("%s; ingest.offset_reset = %r: reading from there", described, policy)

    # -- the writer thread -----------------------------------------------------------

    def _write_loop(self) -> None:
        con = self._db.cursor()
        try:
            while True:
                waiting = [self._queue.get()]
                # In a backlog (a replay, a catch-up), batches go into transactions of a
                # DuckDB row group: those skip the WAL and the checkpoint (measured: 3.9
                # instead of 5.6 us a row). Until one is full, the writer takes every
                # batch queued and waits up to _LINGER_S for the next, while the last
                # poll left records behind; beyond it, only batches validated already:
                # waiting for more would leave the writer idle now and with all of them
                # at the end. Live traffic, read to its end by each poll, is stored
                # as it comes.
                while len(waiting) < self._QUEUE_DEPTH and waiting[-1] is not _STOP:
                    last = waiting[-1]
                    if sum(item.records for item in waiting) >= _ROW_GROUP:
                        if not _validated_or_stop(self._queue):
                            break
                        waiting.append(self._queue.get_nowait())
                        continue
                    try:
                        waiting.append(self._queue.get(timeout=_LINGER_S * last.left_behind))
                    except queue.Empty:
                        break
                try:
                    batches = [item for item in waiting if item is not _STOP]
                    if batches and self._writer_error is None:
                        self._store(con, *batches)
                    if waiting[-1] is _STOP:
                        return
                finally:
                    for _ in waiting:
                        self._queue.task_done()
        except BaseException as exc:  # surfaced by run() on the poll thread
            self._writer_error = exc
            self._stop.set()
            _drain(self._queue)
        finally:
            con.close()

    def _store(self, con: duckdb.DuckDBPyConnection, *batches: _PendingBatch) -> None:
        # A batch already doomed is discarded without waiting for its validation (the
        # generation only grows, and every batch after a doomed one is doomed too), so
        # that the poll thread rewinds at once.
        live = [pending for pending in batches if not self._discard(pending)]
        # Waited for outside the lock, so that a rebalance is not held up by validation.
        validated = [self._validated(pending) for pending in live]
        with self._write_lock:
            kept = [(p, v) for p, v in zip(live, validated, strict=True) if not self._discard(p)]
            if not kept:
                return
            merged = _merged([v for _, v in kept])
            next_offsets: dict[tuple[str, int], int] = {}
            for pending, _ in kept:  # in poll order: the last batch's offsets win
                next_offsets.update(pending.next_offsets)
            result = write_batch(
                con,
                merged.events,
                merged.dead_letters,
                group_id=self._group_id,
                next_offsets=next_offsets,
                duplicate_window=self._settings.ingest.duplicate_window,
            )
            self._stored_offsets.update(next_offsets)
        self.stats.record(merged, result)
        self.stats.last_stored_at = time.monotonic()
        self.stats.last_batch_latency_s = self.stats.last_stored_at - kept[0][0].polled_at
        log.debug(
            "stored a batch: %d consumed so far (%d polls in one transaction)",
            self.stats.consumed,
            len(kept),
        )
        if self.on_batch:
            self.on_batch(self.stats)

    def _discard(self, pending: _PendingBatch) -> bool:
        if not self._rewind_needed.is_set() and pending.generation == self._generation:
            return False
        # Polled across a rebalance: we may no longer own some partitions, and later
        # batches continue from positions past this one. Discard it and all that
        # follow until the poll thread rewinds to the stored offsets; its validation
        # is not needed (cancelled unless the validator has started it).
        self._rewind_needed.set()
        pending.validated.cancel()
        return True

    def _validated(self, pending: _PendingBatch) -> ValidatedBatch:
        return self._validator_answer(pending.validated)

    def _validator_answer(self, future: PendingValidation) -> ValidatedBatch:
        """The validator's answer, or an error if it died or hangs: a consumer waiting
        forever on it would look alive and store nothing."""
        limit = self._settings.kafka.max_poll_interval_ms / 1000
        try:
            return future.result(timeout=limit)
        except BrokenExecutor as exc:
            self._validator_failed = True
            raise IngestError(f"the validator process died ({exc})") from None
        except TimeoutError:  # before OSError, of which it is one
            self._validator_failed = True
            raise IngestError(
                f"the validator process did not answer within {limit:g} s "
                "(kafka.max_poll_interval_ms): stuck or starved of CPU"
            ) from None
        except OSError as exc:  # a batch's memory file (ingest/validator_process.py)
            raise _batch_not_delivered(exc) from None

    def close(self) -> None:
        if self._consumer is not None:
            try:
                # Leaving the group is a courtesy (it speeds up the next rebalance);
                # bounded, so that a stop during an outage is not held up for
                # kafka-python's 30 s request timeout.
                leave_within = PROBE_TIMEOUT_MS if self.broker.reachable else 1000
                self._consumer.close(autocommit=False, timeout_ms=leave_within)
            except Exception as exc:  # closing must not mask the loop's own outcome
                log.debug("error while closing the consumer: %s", exc)
        if self._validator_failed:  # hung or dead: waiting for it would never end
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._validator.pid, signal.SIGKILL)
        self._validator.shutdown(wait=not self._validator_failed)


def _batch_not_delivered(exc: OSError) -> IngestError:
    """A batch's memory file could not be made, written or read
    (ingest/validator_process.py), e.g. with too many files open."""
    return IngestError(f"a batch could not reach the validator process: {exc}")


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """No garbage collection meanwhile (in any thread of the process), unless it was
    off already. Each message polled is a ConsumerRecord, a tracked object: with the
    collector paused over a poll in a backlog, they are freed by reference counting
    once packed, never walked: collecting over a backlog of ~400k events went from
    0.56 to ~0.17 us an event (in every thread; the start-up heap frozen in both)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@contextlib.contextmanager
def _start_up_heap_frozen() -> Iterator[None]:
    """While consuming, the objects alive at the start (modules, the Kafka client's,
    DuckDB's, pydantic's, pyarrow's: ~10^5) stay out of the garbage collector's
    sight, as in the validator process. Each poll allocates a ConsumerRecord per
    message, so collections are frequent, and each full one walked them all:
    measured over a backlog of 400k events, the poll thread spent 1.37 us an event
    collecting, 0.56 with them frozen. They are handed back at the end, for a process
    that goes on (a test run, say) to collect them again."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _merged(batches: list[ValidatedBatch]) -> ValidatedBatch:
    """Validated batches as one (in poll order)."""
    if len(batches) == 1:
        return batches[0]
    kinds: dict[str, int] = {}
    for batch in batches:
        for kind, count in batch.dead_letter_kinds.items():
            kinds[kind] = kinds.get(kind, 0) + count
    return ValidatedBatch(
        events=pa.concat_tables([batch.events for batch in batches]),
        dead_letters=pa.concat_tables([batch.dead_letters for batch in batches]),
        consumed=sum(batch.consumed for batch in batches),
        dead_letter_kinds=kinds,
    )


def _validated_or_stop(pending: queue.Queue) -> bool:
    """Whether the queue's next item is a batch whose validation is done, or the
    stop mark. Peeked under the queue's own lock; only the writer thread takes
    items out, so the item is still there when it does."""
    with pending.mutex:
        if not pending.queue:
            return False
        head = pending.queue[0]
    return head is _STOP or head.validated.done()


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


def _out_of_range_offsets(exc: OffsetOutOfRangeError) -> dict[TopicPartition, tuple[int, None]]:
    """kafka-python raises it with ``{TopicPartition: fetch offset}`` as its argument."""
    found = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    return {tp: (int(offset), None) for tp, offset in found.items()}
