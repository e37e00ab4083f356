"""``cdp export``: segments to their destinations (snapshot + diff)."""

from __future__ import annotations

import argparse

from cdp.commands.common import print_export
from cdp.processing.activation.export import run_export
from cdp.processing.segmentation.config import load_segment_config
from cdp.progress import Progress
from cdp.settings import Settings
from cdp.storage.database import connect_live


def export(args: argparse.Namespace, settings: Settings) -> int:
    segments = load_segment_config(settings)
    with connect_live(settings.storage) as con, Progress("export", unit="deliveries") as bar:

        def delivered(done: int, total: int) -> None:
            bar.total = total
            bar.update(done)

        report = run_export(
            con,
            settings,
            segments,
            as_of=args.as_of,
            out_dir=args.out,
            destinations=args.destination or None,
            progress=delivered,
        )
    print_export(report)
    return 1 if report.failed else 0
