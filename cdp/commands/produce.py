"""``cdp produce``: a JSON-lines file streamed into the family topics."""

from __future__ import annotations

import argparse

from cdp.commands.common import require_kafka
from cdp.ingest.producer import produce_file
from cdp.progress import Progress
from cdp.settings import Settings


def produce(args: argparse.Namespace, settings: Settings) -> int:
    with Progress("produce", unit="messages") as bar:
        report = produce_file(require_kafka(settings), args.file, progress=bar.update)
    for topic, count in sorted(report.by_topic.items()):
        print(f"{topic:<24} {count:>10,}")
    print(f"sent {report.sent:,} messages", end="")
    if report.unroutable:
        print(
            f" ({report.unroutable:,} with no recognizable type went to "
            f"{settings.topics.browse}; ingest will dead-letter them)",
            end="",
        )
    print()
    return 0
