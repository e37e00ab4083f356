"""Issue 14 ("one parse, one truth") on the Kafka path: `cdp ingest` against a real
broker dead-letters the same JSON as `cdp load`, and accounts for every offset."""

from __future__ import annotations

import json

import pytest
from kafka import KafkaProducer

from cdp.ingest.consumer import EventConsumer
from cdp.ingest.events import FAMILY_OF_TYPE
from cdp.ingest.topics import create_topics
from cdp.settings import Settings
from cdp.storage.database import connect
from cdp.storage.event_store import stored_offsets
from tests.helpers import encode, event
from tests.ingest.untrusted_json import reject_cases

pytestmark = pytest.mark.kafka


def _topic(settings: Settings, value: bytes) -> str:
    # The stdlib parser reads NaN and keeps the last of repeated keys: enough for `type`.
    event_type = json.loads(value)["type"]
    return settings.topics.by_family()[FAMILY_OF_TYPE[event_type].value]


def test_cdp_ingest_dead_letters_every_json_the_typed_columns_could_read_differently(
    kafka_settings,
):
    create_topics(kafka_settings)
    cases = reject_cases()
    good = [encode(event("page_viewed", "good-1")), encode(event("order_completed", "good-2"))]
    sent = [good[0], *(case.value for case in cases), good[1]]
    producer = KafkaProducer(bootstrap_servers=kafka_settings.kafka.bootstrap_servers)
    for value in sent:
        producer.send(_topic(kafka_settings, value), value, partition=0)
    producer.flush()
    producer.close()

    with connect(kafka_settings.storage.db_path) as con:
        EventConsumer(kafka_settings, con).run(until_idle=True)
        stored = {row[0] for row in con.execute("SELECT event_id FROM events").fetchall()}
        dead = {
            raw: (kind, reason)
            for raw, kind, reason in con.execute(
                "SELECT raw, error_kind, reason FROM dead_letters"
            ).fetchall()
        }
        found = con.execute(
            """SELECT source_topic, source_offset FROM (
                   SELECT source_topic, source_offset FROM events UNION ALL
                   SELECT source_topic, source_offset FROM dead_letters UNION ALL
                   SELECT source_topic, source_offset FROM duplicate_events)
               ORDER BY ALL"""
        ).fetchall()
        next_offsets = stored_offsets(con, kafka_settings.kafka.group_id)

    assert stored == {"good-1", "good-2"}
    for case in cases:
        kind, reason = dead[case.value]
        assert kind == "invalid_event", case.name
        assert case.reason in reason, (case.name, reason)
    # Every offset of every topic in exactly one table, once.
    expected = sorted(
        (topic, offset) for (topic, _), end in next_offsets.items() for offset in range(end)
    )
    assert found == expected
    assert len(found) == len(sent)
