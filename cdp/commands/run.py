"""``cdp run``: the service — ingest, with profile builds on the schedule."""

from __future__ import annotations

import argparse
import threading

from cdp.commands.common import print_stats, require_kafka, stop_on_signals
from cdp.service import run_service
from cdp.settings import Settings
from cdp.storage.database import connect_live


def run(args: argparse.Namespace, settings: Settings) -> int:
    settings = require_kafka(settings)
    stop = threading.Event()
    stop_on_signals(stop)
    schedule = settings.schedule
    print(
        f"cdp run: ingesting from {settings.kafka.bootstrap_servers} into "
        f"{settings.storage.db_path}; refresh every {schedule.refresh_minutes:g} min, "
        f"nightly build '{schedule.nightly_cron}' ({schedule.timezone})",
        flush=True,
    )
    # DuckDB's default threads, not [ingest] duckdb_threads: the builds share the
    # setting and need every core.
    with connect_live(settings.storage, memory_limit=settings.ingest.memory_limit) as con:
        stats = run_service(settings, con, stop, say=lambda line: print(line, flush=True))
    print_stats(stats)
    return 0
