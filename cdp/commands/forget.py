"""``cdp forget``: a customer deleted everywhere and suppressed (the library sends
their exits and republishes the analyst database; this prints what it did)."""

from __future__ import annotations

import argparse

from cdp.commands.common import print_export
from cdp.processing.activation.privacy import forget_customer
from cdp.processing.segmentation.config import load_segment_config
from cdp.settings import Settings
from cdp.storage.database import connect_live


def forget(args: argparse.Namespace, settings: Settings) -> int:
    segments = load_segment_config(settings)
    with connect_live(settings.storage) as con:
        report = forget_customer(con, settings, segments, args.customer)
    print(
        f"forgot {report.customer_id}: {report.events_deleted:,} events deleted, "
        f"{report.identifiers} identifiers suppressed"
    )
    if report.analyst is not None:
        print(f"analyst database {report.analyst.path} republished without them")
    if report.exits is not None:
        print_export(report.exits)
    print("file destinations list the exits in their next export")
    return 1 if report.exits is not None and report.exits.failed else 0
