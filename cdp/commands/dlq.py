"""``cdp dlq list`` and ``cdp dlq replay``: dead letters, shown and re-validated."""

from __future__ import annotations

import argparse

from cdp.ingest.deadletters import list_dead_letters, replay_dead_letters
from cdp.settings import Settings
from cdp.storage.database import connect_live


def list_letters(args: argparse.Namespace, settings: Settings) -> int:
    with connect_live(settings.storage) as con:
        rows, total = list_dead_letters(con, limit=args.limit, kind=args.kind)
    print(f"{total:,} dead letters" + (f" of kind {args.kind}" if args.kind else ""))
    for row in rows:
        print(f"#{row.dead_letter_id} {row.source}  [{row.error_kind}]")
        print(f"    reason: {row.reason}")
        print(f"    raw:    {row.raw_preview}")
    return 0


def replay(args: argparse.Namespace, settings: Settings) -> int:
    with connect_live(settings.storage) as con:
        report = replay_dead_letters(con, settings, kind=args.kind)
    print(
        f"examined {report.examined:,}: {report.moved_to_events:,} moved to events, "
        f"{report.already_stored:,} were already stored, {report.still_failing:,} still failing"
    )
    return 0
