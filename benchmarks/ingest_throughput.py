"""Ingest throughput: raw kafka-python consume vs. `cdp ingest` to committed DuckDB rows.

Produces a synthetic store of N/28 customers to the bundled broker (at most N lines:
634,379 events at the default N of 1,000,000), then in the same run measures
  (a) a raw kafka-python consume of those messages with no processing, in a process
      of its own that imports kafka-python alone (benchmarks/raw_consume.py), and
  (b) cdp's consumer: validate, write to DuckDB with offsets, commit,
and prints both rates and their ratio. CRC checking is on in both (the crc32c package
makes it cheap). Both clocks start when the consumer owns its partitions, so the
group join (a few seconds on any broker) is not counted against either.

The rate is a backlog's, as when a topic is replayed into a new database: at the
default size cdp's run lasts ~7 s. In a run of ~2 s (--events 300000), filling the
pipeline (the first poll validated before the first write) and emptying it (the last
transaction written after the last validation) take ~0.4 s of it, and the ratio
reads ~0.03-0.1 lower.

    python benchmarks/ingest_throughput.py [--events N] [--batch N]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

from cdp.ingest.broker import local_broker
from cdp.ingest.consumer import EventConsumer, IngestStats
from cdp.ingest.generator import generate_store
from cdp.ingest.producer import produce_file
from cdp.ingest.topics import create_topics
from cdp.settings import Settings, load_settings
from cdp.storage.database import connect


def raw_consume(settings: Settings, expected: int) -> float:
    """Records per second of a bare kafka-python consumer with ingest's fetch
    settings, in a process of its own (benchmarks/raw_consume.py)."""
    done = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("raw_consume.py")),
            settings.kafka.bootstrap_servers,
            ",".join(settings.topics.by_family().values()),
            str(settings.topics.partitions),
            str(expected),
            str(settings.ingest.max_batch_records),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(done.stdout)


def cdp_ingest(settings: Settings, db_path: Path, expected: int) -> tuple[float, IngestStats]:
    """Records per second from partition assignment to the last committed batch."""
    stop = threading.Event()
    marks: dict[str, float] = {}

    def on_batch(stats: IngestStats) -> None:
        marks["last_commit"] = time.perf_counter()
        if stats.consumed >= expected:
            stop.set()

    # The database opened as `cdp ingest` opens it: ingest's memory limit and threads.
    ingest = settings.ingest
    with connect(db_path, memory_limit=ingest.memory_limit, threads=ingest.duckdb_threads) as con:
        consumer = EventConsumer(settings, con, stop=stop, on_batch=on_batch)
        original = consumer._partitions_assigned

        def assigned(partitions):  # start the clock when the group join is done
            original(partitions)
            marks.setdefault("assigned", time.perf_counter())

        consumer._partitions_assigned = assigned
        stats = consumer.run()
        rows = con.execute("SELECT count(*) FROM events").fetchone()[0]
    assert rows == stats.stored, "committed rows must match what the consumer reported"
    return stats.consumed / (marks["last_commit"] - marks["assigned"]), stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=None, help="ingest.max_batch_records")
    args = parser.parse_args()

    print(f"crc32c installed: {importlib.util.find_spec('crc32c') is not None}")
    with tempfile.TemporaryDirectory() as tmp, local_broker() as broker:
        work = Path(tmp)
        overrides = {"kafka": {"bootstrap_servers": broker.bootstrap_servers}}
        if args.batch:
            overrides["ingest"] = {"max_batch_records": args.batch}
        settings = load_settings(None, overrides)
        source = work / "events.jsonl"
        customers = max(1, args.events // 28)  # the generator writes ~28 events a customer
        report = generate_store(source, customers=customers, seed=1, end=date(2026, 11, 1))
        with source.open("rb") as handle:
            lines = handle.readlines()[: args.events]
        source.write_bytes(b"".join(lines))
        create_topics(settings)
        started = time.perf_counter()
        produced = produce_file(settings, source).sent
        produce_rate = produced / (time.perf_counter() - started)
        print(
            f"produced {produced:,} events ({report.malformed:,} malformed in the full store) "
            f"at {produce_rate:,.0f} msg/s"
        )

        raw_rate = raw_consume(settings, produced)
        ingest_rate, stats = cdp_ingest(settings, work / "bench.duckdb", produced)

    print(f"(a) raw kafka-python consume : {raw_rate:>10,.0f} msg/s")
    print(
        f"(b) cdp ingest -> DuckDB     : {ingest_rate:>10,.0f} msg/s "
        f"({stats.stored:,} stored, {stats.dead_lettered:,} dead-lettered, "
        f"{stats.duplicates:,} duplicates, {stats.batches} transactions)"
    )
    print(f"ratio (b)/(a)                : {ingest_rate / raw_rate:>10.2f}  (target >= 0.60)")


if __name__ == "__main__":
    main()
