"""``cdp load`` (a JSON-lines file straight into DuckDB) and ``cdp ingest`` (the
topics into DuckDB, exactly once): both store events and print the same statistics."""

from __future__ import annotations

import argparse
import threading

from cdp.commands.common import print_stats, require_kafka, stop_on_signals
from cdp.ingest.loader import load_file
from cdp.ingest.validation import ValidationLimits
from cdp.progress import Progress
from cdp.settings import Settings
from cdp.storage.database import connect_live


def load(args: argparse.Namespace, settings: Settings) -> int:
    with (
        connect_live(settings.storage, memory_limit=settings.ingest.memory_limit) as con,
        Progress("load", unit="events") as bar,
    ):
        stats = load_file(
            con,
            args.file,
            limits=ValidationLimits.from_settings(settings.ingest),
            duplicate_window=settings.ingest.duplicate_window,
            progress=lambda stats: bar.update(stats.consumed),
        )
    print_stats(stats)
    return 0


def ingest(args: argparse.Namespace, settings: Settings) -> int:
    from cdp.ingest.consumer import EventConsumer  # kafka-python: not for cdp load

    settings = require_kafka(settings)
    stop = threading.Event()
    stop_on_signals(stop)
    # A bar only for --until-idle: the service form runs for days, and logs instead.
    bar = Progress("ingest", unit="messages") if args.until_idle else None
    with connect_live(
        settings.storage,
        memory_limit=settings.ingest.memory_limit,
        threads=settings.ingest.duckdb_threads,
    ) as con:
        consumer = EventConsumer(
            settings,
            con,
            stop=stop,
            on_batch=(lambda stats: bar.update(stats.consumed)) if bar else None,
        )
        try:
            stats = consumer.run(until_idle=args.until_idle)
        finally:
            if bar:
                bar.close()
    print_stats(stats)
    return 0
