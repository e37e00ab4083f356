"""Creating the family topics. Safe to run again: existing topics are left as they are."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from cdp.ingest.broker import BOOTSTRAP_TIMEOUT_MS, bootstrap_list, broker_errors
from cdp.settings import Settings


@dataclass(frozen=True)
class TopicReport:
    created: list[str]
    existing: list[str]


def create_topics(settings: Settings) -> TopicReport:
    """Create the family topics that do not exist yet."""
    return ensure_topics(settings, list(settings.topics.by_family().values()))


def ensure_topics(settings: Settings, names: list[str]) -> TopicReport:
    """Create those of ``names`` that do not exist, with the configured partitions."""
    topics = settings.topics
    servers = settings.kafka.bootstrap_servers
    with broker_errors(servers, "creating the topics"):
        return _ensure_topics(settings, names, topics.partitions, topics.replication_factor)


def _ensure_topics(
    settings: Settings, names: list[str], partitions: int, replication_factor: int
) -> TopicReport:
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap_list(settings.kafka.bootstrap_servers),
        client_id=settings.kafka.client_id,
        bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
    )
    try:
        existing = set(admin.list_topics())
        wanted = list(dict.fromkeys(names))
        missing = [name for name in wanted if name not in existing]
        if missing:
            # Created concurrently by another process is the wanted state too.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(
                    [NewTopic(name, partitions, replication_factor) for name in missing]
                )
        return TopicReport(created=missing, existing=[n for n in wanted if n not in missing])
    finally:
        admin.close()
