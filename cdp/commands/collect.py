"""``cdp collect``: the HTTP collector, Segment-format events into the family topics."""

from __future__ import annotations

import argparse
import threading

from cdp.commands.common import require_kafka, stop_on_signals
from cdp.ingest.collector import run_collector
from cdp.settings import Settings


def collect(args: argparse.Namespace, settings: Settings) -> int:
    settings = require_kafka(settings)
    stop = threading.Event()
    stop_on_signals(stop)
    report = run_collector(settings, stop, say=lambda line: print(line, flush=True))
    print(
        f"collected {report.events:,} events in {report.requests:,} requests "
        f"({report.unavailable:,} answered 503, {report.refused:,} refused)"
    )
    return 0
