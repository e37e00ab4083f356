"""``cdp demo``: the whole ingest path on one machine with nothing set up.

Starts the bundled broker unless Kafka is configured, creates the topics, writes a
seeded synthetic store and streams it into the topics by both front doors: its browse
events as a browser SDK sends them, through the HTTP collector (``cdp collect``) in
Segment batches, the rest straight to Kafka as a store's back end does. Then it
ingests everything into a fresh DuckDB file and runs the service's nightly job on it
(build, publish, export: ``cdp.processing.jobs.pipeline``).

A demo starts from an empty database, so it deletes the one ``--db`` names, but only
a database an earlier demo made (it marks its databases) unless told ``replace``
(``cdp demo --force``): a typo in ``--db`` must not cost a store its data.
"""

from __future__ import annotations

import base64
import http.client
import json
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from cdp.errors import ConfigError, IngestError, StorageError
from cdp.ingest.broker import local_broker
from cdp.ingest.collector import CollectorWorkers
from cdp.ingest.consumer import EventConsumer, IngestStats
from cdp.ingest.events import FAMILY_OF_TYPE, Family, UnknownEventType, canonical_type
from cdp.ingest.generator import GenerateReport, generate_store
from cdp.ingest.producer import ProduceReport, produce_file
from cdp.ingest.recent_activity import append_recent_activity
from cdp.ingest.topics import create_topics
from cdp.processing.as_of import end_of_day
from cdp.processing.jobs.backfill import backfill_month_ends
from cdp.processing.jobs.pipeline import build_publish_export
from cdp.processing.segmentation.config import load_segment_config
from cdp.processing.stages.clv_backtest import describe
from cdp.settings import CollectorSource, Settings
from cdp.storage.database import connect, connect_live
from cdp.storage.sql import sql_string


@dataclass
class DemoResult:
    db_path: Path
    bootstrap_servers: str
    used_bundled_broker: bool
    generated: GenerateReport
    produced: ProduceReport
    collected: int  # events sent through the HTTP collector
    ingested: IngestStats
    analyst_db: Path
    report: Path


def run_demo(
    settings: Settings,
    *,
    customers: int,
    seed: int,
    end: date | None = None,
    replace: bool = False,
    say: Callable[[str], None] = print,
) -> DemoResult:
    """``replace``: delete the database ``storage.db_path`` names even if no demo made it."""
    db_path = settings.storage.db_path
    if not replace:
        _refuse_foreign_database(db_path)
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
        started = datetime.now(UTC)
        last_moment = min(started, end_of_day(end)) if end else started
        fresh = append_recent_activity(
            events_file, customers=customers, seed=seed, until=last_moment
        )
        say(f"added {fresh} events of the store's last days: first orders and open carts")
        backend_file = workdir / "store-backend.jsonl"
        browser_events = _split_browser_events(events_file, backend_file)
        collected = _collect_over_http(settings, browser_events)
        say(f"sent {collected:,} browse events through the HTTP collector, as browser SDKs do")
        produced = produce_file(settings, backend_file)
        say(f"produced {produced.sent:,} messages straight to Kafka, as a back end does")
        # A demo starts from a clean database: the bundled broker forgets its topics on
        # exit, so offsets stored by an earlier demo would point past the new topics.
        for stale in (db_path, db_path.with_name(db_path.name + ".wal")):
            stale.unlink(missing_ok=True)
        con = stack.enter_context(connect_live(settings.storage))
        con.execute(f"COMMENT ON TABLE schema_migrations IS {sql_string(_DEMO_MARK)}")
        consumer = EventConsumer(settings, con, stop=threading.Event())
        ingested = consumer.run(until_idle=True)
        say(f"ingested {ingested.consumed:,} messages in {ingested.elapsed_s:.1f} s")
        history = backfill_month_ends(
            con, settings, segments, before=last_moment, months=BACKFILL_MONTHS
        )
        say(
            f"built the {len(history)} month-end builds before it "
            f"({history[0].as_of:%Y-%m-%d} to {history[-1].as_of:%Y-%m-%d}) in "
            f"{sum(b.seconds for b in history):.1f} s, so every trend has a year of points"
        )
        run = build_publish_export(con, settings, segments)
        published, exported = run.published, run.exported
        built = published.build
        say(f"built {built.customers:,} customer profiles in {built.seconds:.1f} s")
        for row in built.backtest.rows:
            if row["chosen"]:
                say(f"predicted CLV checked against the last year: {describe(row)}")
        analyst, report = published.analyst.path, published.report
        say(f"published the analyst database {analyst} and the report {report}")
        written = sum(result.status == "succeeded" for result in exported.results)
        say(f"exported {written} segment deliveries to {settings.export.out_dir}/")
        return DemoResult(
            db_path=db_path,
            bootstrap_servers=settings.kafka.bootstrap_servers,
            used_bundled_broker=bundled,
            generated=generated,
            produced=produced,
            collected=collected,
            ingested=ingested,
            analyst_db=analyst,
            report=report,
        )


# Month-end builds before the demo's own: a year of points in every trend.
BACKFILL_MONTHS = 12

# What a demo writes on the database it made (a catalog comment: no schema change).
_DEMO_MARK = "made by cdp demo, which replaces it at its next run"


def _refuse_foreign_database(db_path: Path) -> None:
    if not db_path.exists():
        return
    try:
        with connect(db_path, read_only=True) as con:
            mark = con.execute(
                "SELECT comment FROM duckdb_tables() WHERE table_name = 'schema_migrations'"
            ).fetchall()
    except StorageError:  # DatabaseLocked (in use by another cdp) is not one: it passes
        mark = []  # not a DuckDB database at all
    if mark != [(_DEMO_MARK,)]:
        raise ConfigError(
            f"--db {db_path} exists and is not a database cdp demo made; a demo starts "
            "from an empty database and would delete it. Name another --db, or pass "
            "--force to replace it"
        )


DEMO_WRITE_KEY = "wk_demo_browser"
_BATCH_EVENTS = 100  # as segment-analytics-python and rudder-sdk-python batch


def _is_browse_event(line: bytes) -> bool:
    try:
        event = json.loads(line)
        name = event.get("event") if event.get("type") == "track" else event.get("type")
        return FAMILY_OF_TYPE[canonical_type(name)] is Family.BROWSE
    except (ValueError, AttributeError, TypeError, UnknownEventType):
        return False  # not an event: the back end's path dead-letters it


def _split_browser_events(events_file: Path, backend_file: Path) -> list[bytes]:
    """The browse events (for the collector); every other line into ``backend_file``."""
    browser: list[bytes] = []
    with events_file.open("rb") as lines, backend_file.open("wb") as backend:
        for line in lines:
            if _is_browse_event(line):
                browser.append(line.rstrip(b"\r\n"))
            else:
                backend.write(line)
    return browser


def _collect_over_http(settings: Settings, events: list[bytes]) -> int:
    """Post ``events`` to an in-process collector in Segment batches, as an SDK does:
    retrying what is answered 503 after its Retry-After."""
    source = CollectorSource(name="demo-browser", write_key=DEMO_WRITE_KEY)
    collector_settings = settings.collector.model_copy(
        update={"listen": "127.0.0.1:0", "sources": [source]}
    )
    server = CollectorWorkers(settings.model_copy(update={"collector": collector_settings}))
    host, _, port = server.address.rpartition(":")
    auth = "Basic " + base64.b64encode(f"{DEMO_WRITE_KEY}:".encode()).decode()
    headers = {"Content-Type": "application/json", "Authorization": auth}
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        server.start()
        for start in range(0, len(events), _BATCH_EVENTS):
            body = b'{"batch":[' + b",".join(events[start : start + _BATCH_EVENTS]) + b"]}"
            for _attempt in range(10):
                connection.request("POST", "/v1/batch", body, headers)
                answer = connection.getresponse()
                reply = answer.read()
                if answer.status == 200:
                    break
                if answer.status != 503:
                    raise IngestError(f"the collector answered {answer.status}: {reply[:300]!r}")
                time.sleep(float(answer.getheader("Retry-After", "1")))
            else:
                raise IngestError("the collector answered 503 ten times; is Kafka up?")
    finally:
        connection.close()
        server.stop()
        server.remove_metrics()
    return len(events)
