"""The ``kafka`` destination: one message per change (see :mod:`.messages`) on the
configured topic, keyed by customer id, acknowledged by all in-sync replicas, with
an ``idempotency-key`` header. The topic is created if missing; the brokers are
cdp's own (``kafka.bootstrap_servers``)."""

from __future__ import annotations

from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError

from cdp.errors import DeliveryError
from cdp.ingest.broker import bootstrap_list
from cdp.ingest.topics import ensure_topics
from cdp.processing.activation.destinations.base import Confirm, Context, Deliverer, Delivery
from cdp.processing.activation.destinations.messages import (
    changes,
    confirm_changes,
    encode,
    idempotency_key,
)
from cdp.processing.segmentation.config import KafkaDestination


class KafkaDeliverer(Deliverer[KafkaDestination]):
    def deliver(self, delivery: Delivery, confirm: Confirm, context: Context) -> str:
        settings, topic = context.settings, self.config.topic
        location = f"kafka topic {topic}"
        if not settings.kafka.bootstrap_servers:
            raise DeliveryError(f"{location}: kafka.bootstrap_servers is not configured")
        sent = changes(delivery)
        if not sent:
            return location
        try:
            ensure_topics(settings, [topic])
            producer = KafkaProducer(
                bootstrap_servers=bootstrap_list(settings.kafka.bootstrap_servers),
                client_id=f"{settings.kafka.client_id}-export",
                acks="all",
                linger_ms=20,
            )
        except KafkaError as exc:
            raise DeliveryError(f"{location}: cannot connect: {exc}") from None
        try:
            try:
                _send_and_wait(producer, topic, delivery, sent)
            finally:
                producer.close(timeout=5)  # it flushes what is left, so it can time out too
        except KafkaError as exc:
            raise DeliveryError(f"{location}: not acknowledged: {exc}") from None
        confirm_changes(confirm, sent)
        return location


def _send_and_wait(
    producer: KafkaProducer, topic: str, delivery: Delivery, sent: list[dict[str, Any]]
) -> None:
    """Send one message per change and wait until every one is acknowledged."""
    futures = []
    for change in sent:
        value = encode(change)
        futures.append(
            producer.send(
                topic,
                key=change["customer_id"].encode(),
                value=value,
                headers=[("idempotency-key", idempotency_key(delivery, value).encode())],
            )
        )
    producer.flush(timeout=60)
    for future in futures:
        future.get(timeout=0)
