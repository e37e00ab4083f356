"""Kafka's copy of the group's offsets (what lag tools and `cdp status` read): an
offset counts as committed only once Kafka confirms it, and a failed commit is sent
again. The broker's part is replaced by a recorder here: what is under test is the
consumer's bookkeeping, which the real-broker outage test exercises end to end."""

from __future__ import annotations

from kafka.errors import KafkaTimeoutError

from cdp.ingest.consumer import EventConsumer
from cdp.settings import Settings


class _RecordingKafka:
    """Answers each commit_async with the next outcome: an exception or success."""

    def __init__(self, outcomes: list[BaseException | None]) -> None:
        self.outcomes = outcomes
        self.sent: list[dict[tuple[str, int], int]] = []
        self.waiting: list = []

    def commit_async(self, offsets, callback):
        self.sent.append({(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()})
        self.waiting.append((offsets, callback))

    def answer_all(self) -> None:
        """What kafka-python does inside poll() once responses (or timeouts) arrived."""
        for offsets, callback in self.waiting:
            outcome = self.outcomes.pop(0)
            callback(offsets, outcome if outcome is not None else object())
        self.waiting.clear()

    def close(self, **kwargs) -> None:
        pass


def test_a_commit_that_failed_during_an_outage_is_sent_again_and_only_confirmed_ones_count(
    memory_db,
):
    consumer = EventConsumer(Settings(), memory_db)
    kafka = _RecordingKafka([KafkaTimeoutError("broker paused"), None])
    consumer._consumer = kafka
    try:
        consumer._stored_offsets[("store.browse", 0)] = 120
        consumer._commit_to_kafka()
        consumer._commit_to_kafka()  # in flight: not sent twice
        assert kafka.sent == [{("store.browse", 0): 120}]
        kafka.answer_all()  # the broker never answered: the commit failed
        consumer._commit_to_kafka()  # so it is sent again
        assert kafka.sent == [{("store.browse", 0): 120}] * 2
        kafka.answer_all()  # confirmed this time
        consumer._commit_to_kafka()
        assert len(kafka.sent) == 2
        assert consumer._committed_to_kafka == {("store.browse", 0): 120}
    finally:
        consumer.close()


def test_a_newer_offset_stored_while_a_commit_is_in_flight_is_committed_after_it(memory_db):
    consumer = EventConsumer(Settings(), memory_db)
    kafka = _RecordingKafka([None, None])
    consumer._consumer = kafka
    try:
        consumer._stored_offsets[("store.cart", 1)] = 10
        consumer._commit_to_kafka()
        consumer._stored_offsets[("store.cart", 1)] = 25  # the writer stored another batch
        consumer._commit_to_kafka()
        kafka.answer_all()
        consumer._commit_to_kafka()
        assert kafka.sent == [{("store.cart", 1): 10}, {("store.cart", 1): 25}]
        assert consumer._committed_to_kafka == {("store.cart", 1): 25}
    finally:
        consumer.close()


def test_a_commit_never_answered_is_sent_again_after_a_while(memory_db):
    consumer = EventConsumer(Settings(), memory_db)
    kafka = _RecordingKafka([])
    consumer._consumer = kafka
    try:
        consumer._stored_offsets[("store.identify", 3)] = 7
        consumer._commit_to_kafka()
        consumer._commit_to_kafka()
        assert len(kafka.sent) == 1  # waiting for its answer
        offset, sent_at = consumer._commits_in_flight[("store.identify", 3)]
        consumer._commits_in_flight[("store.identify", 3)] = (offset, sent_at - 11)
        consumer._commit_to_kafka()  # the answer is not coming: the coordinator moved
        assert kafka.sent == [{("store.identify", 3): 7}] * 2
    finally:
        consumer.close()
