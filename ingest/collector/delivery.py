"""Kafka delivery for the collector: a request is done when Kafka has all its events.

The HTTP side runs on an asyncio loop; kafka-python's producer is threaded. A request
hands its messages to one sender thread (``producer.send`` may block: on metadata for a
topic, or on a full buffer, and the loop must keep serving meanwhile) and awaits one
asyncio future, resolved from the producer's I/O thread once every message was
acknowledged (``acks=all``) or one failed.

Back-pressure, so memory stays bounded whatever Kafka does: at most
``max_in_flight_events`` events are between "accepted from a client" and "answered
by Kafka". A request that would exceed it waits for room until its deadline, then
gets 503 with ``Retry-After``. Room is given back when Kafka has answered for the
events, not when the request gave up waiting, so events that are still in the
producer's buffer keep counting. A request answered 503 may still reach Kafka later;
its retry then sends the same ``messageId``s again and ingest stores each event once.

A broker that is not there when the collector starts is waited for, as ``cdp ingest``
waits: requests are answered 503 until a producer connects.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from kafka import KafkaProducer, errors
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2

from cdp.errors import TransientError
from cdp.ingest.broker import BOOTSTRAP_TIMEOUT_MS, bootstrap_list, broker_errors
from cdp.ingest.collector.metrics import CollectorMetrics
from cdp.ingest.collector.segment import Message
from cdp.settings import Settings

log = logging.getLogger(__name__)

RECONNECT_EVERY_S = 2.0
PARTITIONS_TTL_S = 60.0
KEY_HASH_CACHE = 500_000  # customers' key hashes kept (~100 bytes each)


class NotDelivered(Exception):
    """Kafka did not acknowledge a request's events in time: answer 503, try later."""


# What Kafka says of an event that no retry can change. Not every non-retriable error
# is one: an IllegalStateError comes from a producer closing, say, and is transient.
_REFUSED_FOR_GOOD = (
    errors.MessageSizeTooLargeError,
    errors.RecordListTooLargeError,
    errors.InvalidRecordError,
    errors.CorruptRecordError,
    errors.InvalidTopicError,
    errors.TopicAuthorizationFailedError,
)


class Undeliverable(Exception):
    """Kafka refused an event for good (too large for the broker, say): retrying the
    same request would fail the same way, so it is answered 400, naming the error."""


class _Pending:
    """One request's messages on their way: counted down on the producer's I/O thread."""

    __slots__ = ("_lock", "count", "error", "future", "loop", "on_done", "remaining")

    def __init__(
        self,
        count: int,
        loop: asyncio.AbstractEventLoop,
        on_done: Callable[[_Pending], None],
    ) -> None:
        self.count = self.remaining = count
        self.error: BaseException | None = None
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.on_done = on_done
        self._lock = threading.Lock()

    def acknowledged(self, _metadata: object = None) -> None:
        self._settle(None)

    def failed(self, error: BaseException) -> None:
        self._settle(error)

    def _settle(self, error: BaseException | None) -> None:
        with self._lock:
            if error is not None and self.error is None:
                self.error = error
            self.remaining -= 1
            finished = self.remaining == 0
        if finished:
            self.loop.call_soon_threadsafe(self.on_done, self)


class KafkaDelivery:
    """The collector's one producer, with the in-flight bound."""

    def __init__(self, settings: Settings, metrics: CollectorMetrics) -> None:
        collector = settings.collector
        self.max_in_flight = collector.max_in_flight_events
        self.in_flight = 0
        self._metrics = metrics
        metrics.kafka_connected.set(0)
        self._freed: asyncio.Event | None = None  # set whenever room was given back
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cdp-collect-send")
        self._settings = settings
        self._key_hashes: dict[bytes, int] = {}
        # Partitions per topic, as the producer's metadata had them; refreshed with it.
        self._partitions: dict[str, int] = {}
        self._partitions_expire = 0.0
        self._producer: KafkaProducer | None = None
        self._closing = threading.Event()
        self._connector: threading.Thread | None = None
        try:
            self._producer = self._connect()
            metrics.kafka_connected.set(1)
        except TransientError as exc:
            # Like `cdp ingest`, the collector waits for a broker that is not there
            # yet; meanwhile it answers 503, and SDKs keep their events and retry.
            log.warning("%s; answering 503 until it answers", exc)
            self._connector = threading.Thread(
                target=self._keep_connecting, name="cdp-collect-connect", daemon=True
            )
            self._connector.start()

    @property
    def connected(self) -> bool:
        return self._producer is not None

    def _connect(self) -> KafkaProducer:
        settings, collector = self._settings, self._settings.collector
        servers = settings.kafka.bootstrap_servers
        deadline_ms = max(int(collector.delivery_timeout_s * 1000), 1000)
        with broker_errors(servers, "connecting the collector's producer"):
            producer = KafkaProducer(
                bootstrap_servers=bootstrap_list(servers),
                client_id=f"{settings.kafka.client_id}-collector",
                acks="all",
                # kafka-python 3.0's idempotent producer (its default with acks=all) stops
                # sending for good once a batch expires during a broker stall longer than
                # delivery_timeout_ms: every later request would be answered 503. Without
                # it, a retried batch may be written twice; ingest stores each messageId
                # once, so that costs nothing.
                enable_idempotence=False,
                # Requests arrive all the time: a short linger batches them without
                # adding noticeable latency to any one.
                linger_ms=2,
                batch_size=256 * 1024,
                max_request_size=max(1024 * 1024, collector.max_request_bytes * 2),
                # Kafka's own retries give up after the client's deadline: a request
                # answered 503 by then may still land, and its retry is deduplicated.
                delivery_timeout_ms=deadline_ms,
                request_timeout_ms=max(deadline_ms - 500, 500),
                max_block_ms=deadline_ms,
                bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
            )
        # Learn the topics' partitions now, so the first request does not wait for it.
        for topic in settings.topics.by_family().values():
            try:
                producer.partitions_for(topic)
            except KafkaError as exc:
                log.warning("no metadata yet for topic %s: %s", topic, exc)
        return producer

    def _keep_connecting(self) -> None:
        while not self._closing.wait(RECONNECT_EVERY_S):
            try:
                producer = self._connect()
            except TransientError:
                continue
            if self._closing.is_set():
                producer.close(timeout=1)
                return
            self._producer = producer
            self._metrics.kafka_connected.set(1)
            log.info("connected to Kafka at %s", self._settings.kafka.bootstrap_servers)
            return

    async def deliver(self, messages: list[Message], deadline: float) -> None:
        """Return once Kafka acknowledged every message; raise :class:`NotDelivered`
        if that has not happened by ``deadline`` (``time.monotonic()``)."""
        if not messages:
            return
        if self._producer is None:
            raise NotDelivered(
                f"not connected to Kafka at {self._settings.kafka.bootstrap_servers} yet"
            )
        loop = asyncio.get_running_loop()
        count = len(messages)
        if loop.time() > self._partitions_expire:  # a topic may have gained partitions
            self._partitions.clear()
            self._partitions_expire = loop.time() + PARTITIONS_TTL_S
        await self._reserve(count, deadline)
        started = time.monotonic()
        pending = _Pending(count, loop, self._release)
        # On a thread: send() may block (metadata of a topic it has not seen), and the
        # loop must go on serving meanwhile. Measured no slower than sending inline.
        loop.run_in_executor(self._sender, self._send_all, messages, pending)
        try:
            await asyncio.wait_for(asyncio.shield(pending.future), deadline - time.monotonic())
        except TimeoutError:
            raise NotDelivered(
                f"Kafka did not acknowledge {count} events within the deadline"
            ) from None
        error = pending.error
        if error is not None:
            if isinstance(error, _REFUSED_FOR_GOOD):
                raise Undeliverable(f"Kafka refused an event for good: {error}")
            raise NotDelivered(f"Kafka refused the events: {error}")
        self._metrics.produce_latency.observe(time.monotonic() - started)

    async def _reserve(self, count: int, deadline: float) -> None:
        if self._freed is None:
            self._freed = asyncio.Event()
        # A request larger than the whole bound is let through alone.
        while self.in_flight and self.in_flight + count > self.max_in_flight:
            self._freed.clear()
            try:
                await asyncio.wait_for(self._freed.wait(), deadline - time.monotonic())
            except TimeoutError:
                raise NotDelivered(
                    f"{self.in_flight:,} events are waiting for Kafka "
                    f"(collector.max_in_flight_events = {self.max_in_flight:,})"
                ) from None
        self.in_flight += count
        self._metrics.in_flight.inc(count)

    def _release(self, pending: _Pending) -> None:
        """On the loop, once Kafka answered for all of a request's events."""
        self.in_flight -= pending.count
        self._metrics.in_flight.dec(pending.count)
        if self._freed is not None:
            self._freed.set()
        if not pending.future.done():
            pending.future.set_result(None)

    def _send_all(self, messages: list[Message], pending: _Pending) -> None:
        producer = self._producer
        assert producer is not None  # deliver() sends only once connected
        send, hashes, partitions = producer.send, self._key_hashes, self._partitions
        if len(hashes) > KEY_HASH_CACHE:
            hashes.clear()
        for message in messages:
            key, topic = message.key, message.topic
            try:
                if key is None:
                    partition = None
                else:
                    # Kafka's default partitioner (murmur2 of the key), as a back end's
                    # producer picks it, so one customer's events share a partition
                    # whichever door they came in by; cached, as customers repeat.
                    count = partitions.get(topic) or self._partitions_of(topic)
                    hashed = hashes.get(key)
                    if hashed is None:
                        hashed = hashes[key] = murmur2(key) & 0x7FFFFFFF
                    partition = hashed % count
                future = send(topic, value=message.value, key=key, partition=partition)
            except Exception as exc:  # no metadata within max_block_ms, producer closed
                pending.failed(exc)
                continue
            future.add_callback(pending.acknowledged)
            future.add_errback(pending.failed)

    def _partitions_of(self, topic: str) -> int:
        assert self._producer is not None
        count = len(self._producer.partitions_for(topic))
        self._partitions[topic] = count
        return count

    def close(self, timeout_s: float = 10.0) -> None:
        """Send what is buffered (bounded by ``timeout_s``), then close."""
        self._closing.set()
        self._sender.shutdown(wait=True)
        if self._connector is not None:
            self._connector.join()
        if self._producer is None:
            return
        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            log.warning("the collector's last events may not have reached Kafka: %s", exc)
        self._producer.close(timeout=timeout_s)
