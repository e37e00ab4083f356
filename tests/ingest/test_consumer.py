"""The consumer against a real broker: roundtrip, group splitting, bad input, re-sends."""

from __future__ import annotations

import gc
import threading
import time

import pytest
from kafka import KafkaConsumer, KafkaProducer

from cdp.ingest.consumer import EventConsumer
from cdp.ingest.events import FAMILY_OF_TYPE
from cdp.ingest.topics import create_topics
from cdp.ingest.validator_process import ValidatorProcess
from cdp.settings import Settings
from cdp.storage.database import connect
from tests.helpers import encode, event, offsets_accounted, one_of_each_type

pytestmark = pytest.mark.kafka


def _send(settings: Settings, messages: list[tuple[str, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers)
    for topic, value in messages:
        producer.send(topic, value)
    producer.flush()
    producer.close()


def _topic_for(settings: Settings, body: dict) -> str:
    return settings.topics.by_family()[FAMILY_OF_TYPE[body["type"]].value]


def _ingest(settings: Settings) -> None:
    with connect(settings.storage.db_path) as con:
        EventConsumer(settings, con).run(until_idle=True)


def test_every_event_type_round_trips_into_its_typed_row(kafka_settings):
    create_topics(kafka_settings)
    bodies = one_of_each_type()
    _send(kafka_settings, [(_topic_for(kafka_settings, b), encode(b)) for b in bodies])
    _ingest(kafka_settings)
    with connect(kafka_settings.storage.db_path) as con:
        stored = dict(con.execute("SELECT type, family FROM events").fetchall())
        order = con.execute(
            "SELECT revenue::VARCHAR, currency FROM events WHERE type = 'order_completed'"
        ).fetchone()
        email = con.execute("SELECT email FROM events WHERE type = 'identify'").fetchone()[0]
        assert con.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 0
    assert stored == {name: family.value for name, family in FAMILY_OF_TYPE.items()}
    assert order == ("39.9800", "EUR")
    assert email == "Ann@Example.com"


def test_every_kind_of_bad_input_is_dead_lettered_and_every_offset_accounted_for(kafka_settings):
    create_topics(kafka_settings)
    topics = kafka_settings.topics
    good = event("page_viewed", "good-1")
    bad = [
        (topics.browse, b"{not json"),
        (topics.browse, b"\xff\xfe\xfd"),
        (topics.browse, encode({**good, "event_id": "missing-ts", "timestamp": None})),
        (topics.browse, encode({**good, "event_id": "unknown", "type": "page_teleported"})),
        (topics.browse, encode(event("order_completed", "wrong-topic"))),
        (topics.browse, encode({**good, "event_id": "huge", "padding": "x" * 300_000})),
    ]
    _send(kafka_settings, [(topics.browse, encode(good)), *bad])
    _ingest(kafka_settings)
    with connect(kafka_settings.storage.db_path) as con:
        kinds = sorted(
            row[0] for row in con.execute("SELECT error_kind FROM dead_letters").fetchall()
        )
        raws = {row[0] for row in con.execute("SELECT raw FROM dead_letters").fetchall()}
        accounted = offsets_accounted(con)
        assert con.execute("SELECT event_id FROM events").fetchall() == [("good-1",)]
    assert kinds == sorted(
        ["invalid_json", "not_utf8", "invalid_event", "unknown_type", "wrong_topic", "oversized"]
    )
    assert raws == {value for _, value in bad}
    assert accounted == [(topics.browse, 0, 7, 7)] or sum(row[2] for row in accounted) == 7
    assert all(rows == distinct for _, _, rows, distinct in accounted)


def test_resent_event_ids_are_stored_once(kafka_settings):
    create_topics(kafka_settings)
    body = event("product_viewed", "resent")
    topic = _topic_for(kafka_settings, body)
    _send(kafka_settings, [(topic, encode(body))] * 3)
    _ingest(kafka_settings)
    with connect(kafka_settings.storage.db_path) as con:
        assert con.execute("SELECT count(*) FROM events").fetchone()[0] == 1
        assert con.execute("SELECT count(*) FROM duplicate_events").fetchone()[0] == 2


def test_a_second_run_resumes_from_stored_offsets_without_rereading(kafka_settings):
    create_topics(kafka_settings)
    topic = kafka_settings.topics.browse
    _send(kafka_settings, [(topic, encode(event("page_viewed", f"first-{n}"))) for n in range(20)])
    _ingest(kafka_settings)
    _send(kafka_settings, [(topic, encode(event("page_viewed", f"second-{n}"))) for n in range(5)])
    with connect(kafka_settings.storage.db_path) as con:
        consumer = EventConsumer(kafka_settings, con)
        stats = consumer.run(until_idle=True)
        assert con.execute("SELECT count(*) FROM events").fetchone()[0] == 25
    assert stats.consumed == 5


def test_the_start_up_heap_is_out_of_the_collectors_sight_while_consuming_and_handed_back(
    kafka_settings,
):
    create_topics(kafka_settings)
    topic = kafka_settings.topics.browse
    _send(kafka_settings, [(topic, encode(event("page_viewed", f"heap-{n}"))) for n in range(3)])
    frozen_before = gc.get_freeze_count()
    frozen_while_storing: list[int] = []
    with connect(kafka_settings.storage.db_path) as con:
        consumer = EventConsumer(kafka_settings, con)
        consumer.on_batch = lambda _stats: frozen_while_storing.append(gc.get_freeze_count())
        assert consumer.run(until_idle=True).consumed == 3
    assert frozen_while_storing and min(frozen_while_storing) > frozen_before + 10_000
    assert gc.get_freeze_count() == frozen_before


def test_in_a_backlog_polls_and_their_packing_run_with_the_collector_paused_and_never_else(
    kafka_settings, monkeypatch
):
    create_topics(kafka_settings)
    topic = kafka_settings.topics.browse
    _send(kafka_settings, [(topic, encode(event("page_viewed", f"gc-{n}"))) for n in range(10)])
    # Two records a poll: every poll but the last of a partition leaves some behind.
    two_a_poll = kafka_settings.ingest.model_copy(update={"max_batch_records": 2})
    settings = kafka_settings.model_copy(update={"ingest": two_a_poll})
    collecting: dict[str, list[bool]] = {"poll": [], "packing": [], "between polls": []}

    def noting(name: str, function):
        def noted(*args, **kwargs):
            collecting[name].append(gc.isenabled())
            return function(*args, **kwargs)

        return noted

    monkeypatch.setattr(KafkaConsumer, "poll", noting("poll", KafkaConsumer.poll))
    monkeypatch.setattr(ValidatorProcess, "validate", noting("packing", ValidatorProcess.validate))
    monkeypatch.setattr(
        EventConsumer,
        "_check_stored_offsets_in_range",
        noting("between polls", EventConsumer._check_stored_offsets_in_range),
    )
    assert gc.isenabled()
    with connect(settings.storage.db_path) as con:
        assert EventConsumer(settings, con).run(until_idle=True).consumed == 10
    # Paused in the backlog; not for the first poll, nor once read to the end (idle).
    assert False in collecting["poll"] and True in collecting["poll"]
    assert False in collecting["packing"]
    assert all(collecting["between polls"])
    assert gc.isenabled()


def test_two_consumers_in_one_group_split_the_partitions_and_store_everything_once(kafka_settings):
    create_topics(kafka_settings)
    sample_type = {
        "browse": "page_viewed",
        "cart": "cart_viewed",
        "purchase": "order_cancelled",
        "identify": "identify",
    }
    producer = KafkaProducer(bootstrap_servers=kafka_settings.kafka.bootstrap_servers)
    for n in range(2000):
        family, topic = list(kafka_settings.topics.by_family().items())[n % 4]
        value = encode(event(sample_type[family], f"e-{n}"))
        producer.send(topic, value, partition=(n // 4) % kafka_settings.topics.partitions)
    producer.flush()
    producer.close()

    stop = threading.Event()
    assigned: list[set] = [set(), set()]
    with connect(kafka_settings.storage.db_path) as con:
        consumers = [EventConsumer(kafka_settings, con, stop=stop) for _ in range(2)]
        for index, consumer in enumerate(consumers):
            original = consumer._partitions_assigned

            def record(partitions, original=original, index=index):
                original(partitions)
                assigned[index] = {(tp.topic, tp.partition) for tp in partitions}

            consumer._partitions_assigned = record
        threads = [threading.Thread(target=c.run) for c in consumers]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            stored = con.cursor().execute("SELECT count(*) FROM events").fetchone()[0]
            if stored == 2000 and all(assigned) and not (assigned[0] & assigned[1]):
                break
            time.sleep(0.2)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
        counts = con.execute("SELECT count(*), count(DISTINCT event_id) FROM events").fetchone()
        accounted = offsets_accounted(con)
    assert counts == (2000, 2000)
    assert all(assigned), f"each consumer should own partitions, got {assigned}"
    assert not (assigned[0] & assigned[1])
    assert len(assigned[0] | assigned[1]) == 16
    assert sum(rows for _, _, rows, _ in accounted) == 2000
    assert all(rows == distinct for _, _, rows, distinct in accounted)
