import hashlib
import json
import uuid
from datetime import timedelta

import pytest
from kafka import KafkaConsumer, TopicPartition

from cdp.processing.activation.export import run_export
from cdp.processing.segmentation.config import load_segment_config
from cdp.processing.stages.run import run_build
from tests.processing.store import AS_OF, days_ago, order, store

pytestmark = pytest.mark.kafka


def _read_all(bootstrap: str, topic: str, expected: int) -> list:
    """Every message of the topic, read by partition (no group join to wait for)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, consumer_timeout_ms=5000)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        messages = []
        for message in consumer:
            messages.append(message)
            if len(messages) >= expected:
                break
    finally:
        consumer.close()
    return sorted(messages, key=lambda m: m.timestamp)


def test_membership_changes_roundtrip_through_a_real_kafka_topic(memory_db, kafka_settings):
    topic = f"t{uuid.uuid4().hex[:8]}.segment-changes"
    config = load_segment_config(
        kafka_settings,
        f"""
[destinations.stream]
type = "kafka"
topic = "{topic}"

[[segments]]
name = "recent"
rule = "last_order_at within 30 days"
destinations = ["stream"]
consent = "none"
traits = ["orders"]
""",
    )
    store(memory_db, order("ann", days_ago(5), "10"), order("bob", days_ago(40), "10"))
    run_build(memory_db, kafka_settings, AS_OF, config)
    first = run_export(memory_db, kafka_settings, config).results[0]
    assert first.status == "succeeded", first.message
    run_build(memory_db, kafka_settings, AS_OF + timedelta(days=40), config)  # ann leaves
    second = run_export(memory_db, kafka_settings, config).results[0]
    assert (second.entered, second.exited) == (0, 1)

    messages = _read_all(kafka_settings.kafka.bootstrap_servers, topic, expected=2)
    ann = memory_db.execute(
        "SELECT customer_id FROM customer_profiles WHERE user_id = 'ann'"
    ).fetchall()[0][0]
    bodies = [json.loads(m.value) for m in messages]
    assert [(m.key.decode(), b["change"]) for m, b in zip(messages, bodies, strict=True)] == [
        (ann, "entered"),
        (ann, "exited"),
    ]
    assert bodies[0]["traits"] == {"orders": 1} and bodies[0]["segment"] == "recent"
    assert bodies[0]["as_of"] == "2026-06-30"
    # The key is derived from what the message carries, so a message re-sent after a
    # crash (the same change, as-of and destination) carries the key it had.
    for message in messages:
        digest = hashlib.sha256(
            f"stream/recent/{json.loads(message.value)['as_of']}".encode() + b"\0" + message.value
        ).hexdigest()
        assert dict(message.headers)["idempotency-key"] == digest.encode()
