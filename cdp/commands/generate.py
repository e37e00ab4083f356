"""``cdp generate``: a seeded synthetic store as JSON lines."""

from __future__ import annotations

import argparse

from cdp.ingest.generator import generate_store
from cdp.progress import Progress
from cdp.settings import Settings


def generate(args: argparse.Namespace, settings: Settings) -> int:
    with Progress("generate", total=args.customers, unit="customers") as bar:
        report = generate_store(
            args.out,
            customers=args.customers,
            seed=args.seed,
            end=args.end,
            buyer_share=args.buyer_share,
            return_visits=args.return_visits,
            progress=bar.update,
        )
    print(
        f"wrote {report.events:,} events ({report.malformed:,} malformed, {report.resent:,} "
        f"re-sent) for {report.customers:,} customers to {args.out}"
    )
    return 0
