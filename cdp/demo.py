"""``cdp demo``: the whole ingest path on one machine with nothing set up.

Starts the bundled broker unless Kafka is configured, creates the topics, writes a
seeded synthetic store, streams it into the topics, ingests it into a fresh DuckDB
file, builds the customer profiles and summarizes what landed where.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from cdp.ingest.broker import local_broker
from cdp.ingest.consumer import EventConsumer, IngestStats
from cdp.ingest.generator import GenerateReport, generate_store
from cdp.ingest.producer import ProduceReport, produce_file
from cdp.ingest.topics import create_topics
from cdp.processing.export import run_export
from cdp.processing.pipeline import build_and_publish
from cdp.processing.segment_config import load_segment_config
from cdp.settings import Settings
from cdp.storage.database import connect


@dataclass
class DemoResult:
    db_path: Path
    bootstrap_servers: str
    used_bundled_broker: bool
    generated: GenerateReport
    produced: ProduceReport
    ingested: IngestStats
    analyst_db: Path
    report: Path


def run_demo(
    settings: Settings,
    *,
    customers: int,
    seed: int,
    end: date | None = None,
    say: Callable[[str], None] = print,
) -> DemoResult:
    db_path = settings.storage.db_path
    segments = load_segment_config(settings)
    with ExitStack() as stack:
        bundled = not settings.kafka.bootstrap_servers
        if bundled:
            broker = stack.enter_context(local_broker())
            settings = settings.model_copy(
                update={
                    "kafka": settings.kafka.model_copy(
                        update={"bootstrap_servers": broker.bootstrap_servers}
                    )
                }
            )
            say(f"started the bundled broker on {broker.bootstrap_servers}")
        report = create_topics(settings)
        say(f"topics ready: {', '.join(report.created + report.existing)}")
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cdp-demo-")))
        events_file = workdir / "store-events.jsonl"
        generated = generate_store(events_file, customers=customers, seed=seed, end=end)
        say(f"generated {generated.events:,} events for {customers:,} customers (seed {seed})")
        produced = produce_file(settings, events_file)
        say(f"produced {produced.sent:,} messages")
        # A demo starts from a clean database: the bundled broker forgets its topics on
        # exit, so offsets stored by an earlier demo would point past the new topics.
        for stale in (db_path, db_path.with_name(db_path.name + ".wal")):
            stale.unlink(missing_ok=True)
        con = stack.enter_context(connect(db_path))
        consumer = EventConsumer(settings, con, stop=threading.Event())
        ingested = consumer.run(until_idle=True)
        say(f"ingested {ingested.consumed:,} messages in {ingested.elapsed_s:.1f} s")
        published = build_and_publish(con, settings, segments)
        built = published.build
        say(f"built {built.customers:,} customer profiles in {built.seconds:.1f} s")
        say(f"published the analyst database {published.analyst.path} and the report "
            f"{published.report}")  # fmt: skip
        exported = run_export(con, settings, segments)
        written = sum(result.status == "succeeded" for result in exported.results)
        say(f"exported {written} segment deliveries to {settings.export.out_dir}/")
        return DemoResult(
            db_path=db_path,
            bootstrap_servers=settings.kafka.bootstrap_servers,
            used_bundled_broker=bundled,
            generated=generated,
            produced=produced,
            ingested=ingested,
            analyst_db=published.analyst.path,
            report=published.report,
        )
