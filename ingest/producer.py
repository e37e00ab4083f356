"""JSON-lines file -> the family topics (how a store replays its history into Kafka).

Each line goes to the topic of its event's family, keyed by the customer
(``user_id``, else ``anonymous_id``) so that one customer's events stay in order on
one partition. A line whose type cannot be recognized is still sent, to the browse
topic, so that ingest dead-letters it with its raw bytes: a replay loses nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kafka import KafkaProducer
from kafka.errors import KafkaError

from cdp.errors import ConfigError, IngestError
from cdp.ingest.broker import BOOTSTRAP_TIMEOUT_MS, bootstrap_list, broker_errors
from cdp.ingest.events import FAMILY_OF_TYPE, UnknownEventType, canonical_type
from cdp.settings import Settings


@dataclass
class ProduceReport:
    sent: int = 0
    unroutable: int = 0
    by_topic: dict[str, int] = field(default_factory=dict)


def route(line: bytes, topic_by_family: dict[str, str], fallback: str) -> tuple[str, bytes | None]:
    """The topic and key for one JSON line; unparseable lines go to ``fallback``, unkeyed."""
    try:
        event = json.loads(line)
        name = event.get("type")
        if name in ("track", "Track"):
            name = event.get("event")
        family = FAMILY_OF_TYPE[canonical_type(name)]
    except (ValueError, UnknownEventType, AttributeError, TypeError):
        return fallback, None
    customer = (
        event.get("user_id")
        or event.get("userId")
        or event.get("anonymous_id")
        or event.get("anonymousId")
    )
    return topic_by_family[family.value], str(customer).encode() if customer else None


def read_lines(path: Path) -> Iterator[bytes]:
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise ConfigError(f"input file {str(path)!r} does not exist") from None
    with handle:
        for line in handle:
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield line


def produce_file(
    settings: Settings, path: Path, *, progress: Callable[[int], None] | None = None
) -> ProduceReport:
    topic_by_family = settings.topics.by_family()
    fallback = settings.topics.browse
    with broker_errors(settings.kafka.bootstrap_servers, "connecting the producer"):
        producer = KafkaProducer(
            bootstrap_servers=bootstrap_list(settings.kafka.bootstrap_servers),
            client_id=settings.kafka.client_id,
            acks="all",
            linger_ms=20,
            batch_size=512 * 1024,
            max_request_size=max(1024 * 1024, settings.ingest.max_event_bytes * 4),
            retries=10,
            bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
        )
    report = ProduceReport()
    failures: list[BaseException] = []
    try:
        for line in read_lines(path):
            topic, key = route(line, topic_by_family, fallback)
            if key is None and topic == fallback:
                report.unroutable += 1
            producer.send(topic, value=line, key=key).add_errback(failures.append)
            report.sent += 1
            report.by_topic[topic] = report.by_topic.get(topic, 0) + 1
            if progress and report.sent % 10000 == 0:
                progress(report.sent)
        producer.flush()
    except KafkaError as exc:
        raise IngestError(f"producing to Kafka failed after {report.sent} lines: {exc}") from exc
    finally:
        producer.close()
    if failures:
        raise IngestError(
            f"{len(failures)} messages were not acknowledged; first error: {failures[0]}"
        )
    return report
