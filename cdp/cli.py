"""The ``cdp`` command: argument parsing, nothing else.

Each subcommand turns its flags into settings overrides and runs its handler in
:mod:`cdp.commands` (one module per command), which calls one function of the
package and prints the outcome. Only the module of the command that runs is
imported, so ``cdp --help`` stays fast. A ``CdpError`` becomes ``error: <message>``
and exit status 2 (1 for a transient failure worth retrying); never a traceback for
a user's mistake.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from cdp import __version__
from cdp.errors import CdpError, TransientError
from cdp.ingest.generator import BUYER_SHARE, RETURN_VISITS
from cdp.logs import configure_logging
from cdp.settings import Settings, load_settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    try:
        settings = load_settings(args.config, _overrides(args))
        return _handler(args.handler)(args, settings) or 0
    except TransientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except CdpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        # Point stdout at /dev/null so that flushing it at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        # The storage layer raises DiskError itself (above); this is the last resort for
        # a full disk or an I/O error met where no layer of cdp's expected to write.
        # Anything else is a bug, and its traceback is wanted. (Imported here, not at
        # the top, only so that `cdp --help` need not load DuckDB.)
        from cdp.storage.disk import disk_error

        disk = disk_error(exc)
        if disk is None:
            raise
        print(f"error: {disk}", file=sys.stderr)
        return 1


# -- argument types and settings overrides ---------------------------------------


Handler = Callable[[argparse.Namespace, Settings], int]


def _handler(name: str) -> Handler:
    """``"dlq:replay"``: the function ``replay`` of :mod:`cdp.commands.dlq`, imported
    only now (each command module imports the library it needs at its top)."""
    module, function = name.split(":")
    return getattr(importlib.import_module(f"cdp.commands.{module}"), function)


def _overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    listen, explorer = getattr(args, "listen", None), args.handler == "ui:ui"
    return {
        "kafka": {
            "bootstrap_servers": getattr(args, "bootstrap_servers", None),
            "group_id": getattr(args, "group", None),
        },
        "storage": {"db_path": getattr(args, "db", None)},
        "ingest": {"offset_reset": getattr(args, "offset_reset", None)},
        # --listen is the address of the command's own server.
        "collector": {"listen": None if explorer else listen},
        "ui": {"listen": listen if explorer else None},
    }


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    return value


def _positive(text: str) -> int:
    return _whole_number(text, 1)


def _non_negative(text: str) -> int:
    return _whole_number(text, 0)


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cdp", description="Customer data platform event pipeline: Kafka in, DuckDB out."
    )
    parser.add_argument("--version", action="version", version=f"cdp {__version__}")
    parser.add_argument(
        "--config",
        type=Path,
        help="TOML config file (default: $CDP_CONFIG, else ./config/cdp.toml if present)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str,
        handler: str | None,
        help: str,
        parent: argparse._SubParsersAction[argparse.ArgumentParser] = commands,
    ) -> argparse.ArgumentParser:
        """``handler``: ``"module:function"`` in :mod:`cdp.commands`."""
        sub = parent.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    def kafka_flags(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--bootstrap-servers",
            metavar="HOST:PORT[,...]",
            help="Kafka brokers (kafka.bootstrap_servers)",
        )

    def offset_reset_flag(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--offset-reset",
            choices=("earliest", "latest"),
            help="where to read a partition whose stored offset the broker no longer has "
            "(ingest.offset_reset; by default ingest stops and says so)",
        )

    def db_flag(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--db", type=Path, metavar="PATH", help="DuckDB file (storage.db_path)")

    def store_flags(sub: argparse.ArgumentParser, customers: int) -> None:
        sub.add_argument("--customers", type=_positive, default=customers, metavar="N")
        sub.add_argument("--seed", type=int, default=42, metavar="S")
        sub.add_argument(
            "--end",
            type=_date,
            metavar="YYYY-MM-DD",
            help="last day of the two-year history (default: today)",
        )

    demo = command(
        "demo", "demo:demo", "start a bundled broker, stream a synthetic store, ingest it"
    )
    kafka_flags(demo)
    db_flag(demo)
    store_flags(demo, customers=2000)
    demo.add_argument(
        "--force",
        action="store_true",
        help="replace the --db database even if no earlier demo made it",
    )

    topics = command("topics", None, "manage the family topics").add_subparsers(
        dest="topics_command", required=True, metavar="ACTION"
    )
    kafka_flags(command("create", "topics:create", "create the family topics", topics))

    generate = command(
        "generate", "generate:generate", "write a seeded synthetic store as JSON lines"
    )
    generate.add_argument("--out", type=Path, required=True, metavar="FILE")
    store_flags(generate, customers=1000)
    generate.add_argument(
        "--buyer-share",
        type=_share,
        default=BUYER_SHARE,
        metavar="F",
        help=f"share of visitors who ever buy (default {BUYER_SHARE})",
    )
    generate.add_argument(
        "--return-visits",
        type=_non_negative,
        default=RETURN_VISITS,
        metavar="N",
        help=f"most return sessions of a visitor who never buys (default {RETURN_VISITS}); "
        "--buyer-share 0.19 --return-visits 1 gives ~10 events per customer",
    )

    produce = command(
        "produce", "produce:produce", "stream a JSON-lines file into the family topics"
    )
    produce.add_argument("file", type=Path)
    kafka_flags(produce)

    load = command("load", "ingest:load", "load a JSON-lines file straight into DuckDB (no Kafka)")
    load.add_argument("file", type=Path)
    db_flag(load)

    ingest = command("ingest", "ingest:ingest", "consume the topics into DuckDB, exactly once")
    kafka_flags(ingest)
    db_flag(ingest)
    ingest.add_argument("--group", metavar="ID", help="consumer group (kafka.group_id)")
    offset_reset_flag(ingest)
    ingest.add_argument(
        "--until-idle",
        action="store_true",
        help="stop once caught up and nothing new arrives (ingest.idle_timeout_s)",
    )

    run = command("run", "run:run", "the service: ingest, with profile builds on the schedule")
    kafka_flags(run)
    db_flag(run)
    run.add_argument("--group", metavar="ID", help="consumer group (kafka.group_id)")
    offset_reset_flag(run)

    collect = command(
        "collect",
        "collect:collect",
        "the HTTP collector: Segment-format events from SDKs into the family topics",
    )
    kafka_flags(collect)
    collect.add_argument("--listen", metavar="HOST:PORT", help="address (collector.listen)")

    ui = command(
        "ui", "ui:ui", "the customer explorer: a read-only web app over the analyst database"
    )
    db_flag(ui)
    ui.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="address (ui.listen, default 127.0.0.1:8089; another host needs ui.access_token)",
    )

    build = command("build", "build:build", "build customer profiles, CLV, RFM and store KPIs")
    db_flag(build)
    build.add_argument(
        "--as-of",
        type=_date,
        metavar="YYYY-MM-DD",
        help="use only events up to the end of this day (UTC); default: now",
    )

    backtest = command(
        "backtest",
        "backtest:backtest",
        "how good predicted CLV is: fit before a calibration end, compare with what followed",
    )
    db_flag(backtest)
    backtest.add_argument(
        "--as-of",
        type=_date,
        metavar="YYYY-MM-DD",
        help="the holdout ends at the end of this day (default: the latest build's as-of)",
    )
    backtest.add_argument(
        "--holdout-days",
        type=_positive,
        metavar="N",
        help="days to forecast and compare (default: clv.backtest_holdout_days, else the "
        "prediction horizon, shortened when history is short)",
    )

    export = command(
        "export", "export:export", "send segments to their destinations (snapshot + diff)"
    )
    db_flag(export)
    export.add_argument(
        "--out", type=Path, metavar="DIR", help="root of file destinations (export.out_dir)"
    )
    export.add_argument(
        "--as-of",
        type=_date,
        metavar="YYYY-MM-DD",
        help="membership as of the end of this day (default: the latest build)",
    )
    export.add_argument(
        "--destination", action="append", metavar="NAME", help="only this destination (repeatable)"
    )

    forget = command("forget", "forget:forget", "delete a customer everywhere and suppress them")
    forget.add_argument("customer", help="customer id, alias, or identifier like email:ann@x.com")
    db_flag(forget)

    segments = command("segments", None, "inspect the segment definitions").add_subparsers(
        dest="segments_command", required=True, metavar="ACTION"
    )
    command("list", "segments:list_segments", "check every rule and list the segments", segments)

    sql = command("sql", "sql:sql", "run a query against the analyst database")
    sql.add_argument(
        "query", help='e.g. "SELECT rfm_segment, count(*) FROM customer_profiles GROUP BY 1"'
    )
    db_flag(sql)
    sql.add_argument("--format", choices=("table", "csv", "json"), default="table")
    sql.add_argument(
        "--max-rows", type=_positive, default=40, metavar="N", help="table format only"
    )

    db_flag(
        command("shell", "sql:shell", "open the duckdb CLI on the analyst database (read-only)")
    )

    status = command("status", "status:status", "lag, last build and exports, dead letters, sizes")
    kafka_flags(status)
    db_flag(status)
    status.add_argument("--group", metavar="ID", help="consumer group (kafka.group_id)")

    dlq = command("dlq", None, "inspect and replay dead letters").add_subparsers(
        dest="dlq_command", required=True, metavar="ACTION"
    )
    dlq_list = command("list", "dlq:list_letters", "show dead letters with their reasons", dlq)
    db_flag(dlq_list)
    dlq_list.add_argument("--kind", help="only this error kind, e.g. invalid_json")
    dlq_list.add_argument("--limit", type=_positive, default=20, metavar="N")
    dlq_replay = command(
        "replay", "dlq:replay", "re-validate dead letters; good ones move to events", dlq
    )
    db_flag(dlq_replay)
    dlq_replay.add_argument("--kind", help="only this error kind")
    return parser


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
