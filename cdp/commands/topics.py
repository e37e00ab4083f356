"""``cdp topics create``: the family topics, with the configured partitions."""

from __future__ import annotations

import argparse

from cdp.commands.common import require_kafka
from cdp.ingest.topics import create_topics
from cdp.settings import Settings


def create(args: argparse.Namespace, settings: Settings) -> int:
    report = create_topics(require_kafka(settings))
    for name in report.created:
        print(f"created  {name} ({settings.topics.partitions} partitions)")
    for name in report.existing:
        print(f"exists   {name}")
    return 0
