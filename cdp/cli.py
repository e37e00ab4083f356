"""The ``cdp`` command: argument parsing and printing, nothing else.

Each subcommand turns its flags into settings overrides, calls one function of the
package, and prints the outcome. A ``CdpError`` becomes ``error: <message>`` and
exit status 2 (1 for a transient failure worth retrying); never a traceback for a
user's mistake.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from cdp import __version__
from cdp.errors import CdpError, ConfigError, TransientError
from cdp.ingest.generator import BUYER_SHARE, RETURN_VISITS
from cdp.logs import configure_logging
from cdp.progress import Progress
from cdp.settings import Settings, load_settings


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    try:
        settings = load_settings(args.config, _overrides(args))
        return args.handler(args, settings) or 0
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
        # Anything else is a bug, and its traceback is wanted.
        from cdp.storage.database import disk_error

        disk = disk_error(exc)
        if disk is None:
            raise
        print(f"error: {disk}", file=sys.stderr)
        return 1


# -- commands -----------------------------------------------------------------------


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from cdp.demo import run_demo
    from cdp.storage.database import connect
    from cdp.summary import database_summary

    if args.db is None:
        settings = _with_db(settings, Path("cdp-demo.duckdb"))
    result = run_demo(settings, customers=args.customers, seed=args.seed, end=args.end)
    with connect(result.db_path) as con:
        print()
        print(database_summary(con))
    print()
    print(f"database:          {result.db_path.resolve()}")
    print(f"analyst database:  {result.analyst_db.resolve()}")
    print(f"report:            {result.report.resolve()}")
    print(f"segment exports:   {settings.export.out_dir.resolve()}")
    db = f" --db {result.db_path}" if args.db is None else ""
    query = "SELECT rfm_segment, count(*) FROM customer_profiles GROUP BY 1"
    print(f'query it: {_program_name()} sql "{query}"{db}')
    return 0


def _topics_create(args: argparse.Namespace, settings: Settings) -> int:
    from cdp.ingest.topics import create_topics

    report = create_topics(_require_kafka(settings))
    for name in report.created:
        print(f"created  {name} ({settings.topics.partitions} partitions)")
    for name in report.existing:
        print(f"exists   {name}")
    return 0


def _generate(args: argparse.Namespace, settings: Settings) -> int:
    from cdp.ingest.generator import generate_store

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


def _produce(args: argparse.Namespace, settings: Settings) -> int:
    from cdp.ingest.producer import produce_file

    with Progress("produce", unit="messages") as bar:
        report = produce_file(_require_kafka(settings), args.file, progress=bar.update)
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


def _load(args: argparse.Namespace, settings: Settings) -> int:
    from cdp.ingest.loader import load_file
    from cdp.ingest.validation import ValidationLimits
    from cdp.storage.database import connect

    with connect(settings.storage.db_path) as con, Progress("load", unit="events") as bar:
        stats = load_file(
            con, args.file, limits=ValidationLimits.from_settings(settings.ingest),
            progress=lambda stats: bar.update(stats.consumed),
        )  # fmt: skip
    _print_stats(stats)
    return 0


def _ingest(args: argparse.Namespace, settings: Settings) -> int:
    from cdp.ingest.consumer import EventConsumer
    from cdp.storage.database import connect

    settings = _require_kafka(settings)
    stop = threading.Event()
    _stop_on_signals(stop)
    # A bar only for --until-idle: the service form runs for days, and logs instead.
    bar = Progress("ingest", unit="messages") if args.until_idle else None
    with connect(settings.storage.db_path) as con:
        consumer = EventConsumer(
            settings, con, stop=stop,
            on_batch=(lambda stats: bar.update(stats.consumed)) if bar else None,
        )  # fmt: skip
        try:
            stats = consumer.run(until_idle=args.until_idle)
        finally:
            if bar:
                bar.close()
    _print_stats(stats)
    return 0


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from cdp.service import run_service
    from cdp.storage.database import connect

    settings = _require_kafka(settings)
    stop = threading.Event()
    _stop_on_signals(stop)
    schedule = settings.schedule
    print(
        f"cdp run: ingesting from {settings.kafka.bootstrap_servers} into "
        f"{settings.storage.db_path}; refresh every {schedule.refresh_minutes:g} min, "
        f"nightly build '{schedule.nightly_cron}' ({schedule.timezone})",
        flush=True,
    )
    with connect(settings.storage.db_path) as con:
        stats = run_service(settings, con, stop, say=lambda line: print(line, flush=True))
    _print_stats(stats)
    return 0


def _collect(args: argparse.Namespace, settings: Settings) -> int:
    from cdp.ingest.collector import run_collector

    settings = _require_kafka(settings)
    stop = threading.Event()
    _stop_on_signals(stop)
    report = run_collector(settings, stop, say=lambda line: print(line, flush=True))
    print(
        f"collected {report.events:,} events in {report.requests:,} requests "
        f"({report.unavailable:,} answered 503, {report.refused:,} refused)"
    )
    return 0


def _dlq_list(args: argparse.Namespace, settings: Settings) -> int:
    from cdp.ingest.deadletters import list_dead_letters
    from cdp.storage.database import connect

    with connect(settings.storage.db_path) as con:
        rows, total = list_dead_letters(con, limit=args.limit, kind=args.kind)
    print(f"{total:,} dead letters" + (f" of kind {args.kind}" if args.kind else ""))
    for row in rows:
        print(f"#{row.dead_letter_id} {row.source}  [{row.error_kind}]")
        print(f"    reason: {row.reason}")
        print(f"    raw:    {row.raw_preview}")
    return 0


def _dlq_replay(args: argparse.Namespace, settings: Settings) -> int:
    from cdp.ingest.deadletters import replay_dead_letters
    from cdp.storage.database import connect

    with connect(settings.storage.db_path) as con:
        report = replay_dead_letters(con, settings, kind=args.kind)
    print(
        f"examined {report.examined:,}: {report.moved_to_events:,} moved to events, "
        f"{report.already_stored:,} were already stored, {report.still_failing:,} still failing"
    )
    return 0


def _build(args: argparse.Namespace, settings: Settings) -> int:
    from cdp.processing.jobs.pipeline import STAGES, build_and_publish
    from cdp.processing.segmentation.config import load_segment_config
    from cdp.processing.stages.run import end_of_day
    from cdp.storage.database import connect

    as_of = end_of_day(args.as_of) if args.as_of else None
    segments = load_segment_config(settings)  # a bad rule fails here, before any work
    with connect(settings.storage.db_path) as con, Progress("build", total=STAGES) as bar:
        stage = iter(range(1, STAGES + 1))
        published = build_and_publish(
            con, settings, segments, as_of, progress=lambda name: bar.update(next(stage), name)
        )
        report = published.build
        kpis = con.execute(
            "SELECT aov, purchase_frequency, customer_value, churn_rate_monthly, basic_clv,"
            " advanced_clv, repeat_rate, lifespan_years, lifespan_is_default, reporting_currency"
            " FROM store_kpis WHERE as_of = $day",
            {"day": report.as_of.date()},
        ).fetchall()[0]
    print(
        f"build {report.build_id} as of {report.as_of:%Y-%m-%d %H:%M} UTC: {report.customers:,} "
        f"customers ({report.identity.merges:,} merged by new links) in {report.seconds:.1f} s"
    )
    currency = kpis[9]
    print(
        f"  AOV {_num(kpis[0])} {currency}, purchase frequency {_num(kpis[1])}/year, "
        f"customer value {_num(kpis[2])}, repeat rate {_pct(kpis[6])}"
    )
    lifespan = f"{_num(kpis[7])} years" + (" (default: history too short)" if kpis[8] else "")
    print(f"  monthly churn {_pct(kpis[3])}, lifespan {lifespan}")
    print(f"  basic CLV {_num(kpis[4])} {currency}, advanced CLV {_num(kpis[5])} {currency}")
    for name, fit in (("BG/NBD", report.models.bgnbd), ("Gamma-Gamma", report.models.gamma_gamma)):
        params = ", ".join(f"{key}={value:.4g}" for key, value in fit.params.items())
        print(f"  {name}: {fit.message}" + (f" ({params})" if fit.converged else ""))
    if report.unconverted_orders:
        print(
            f"  {report.unconverted_orders:,} orders left out: no exchange rate for their currency"
        )
    if published.analyst is not None:
        print(f"  {report.memberships:,} segment memberships in {len(segments.segments)} segments")
        analyst = published.analyst
        how = f"; updated {', '.join(analyst.incremental)} in place" if analyst.incremental else ""
        print(
            f"  analyst database {analyst.path} "
            f"({analyst.bytes / 1_048_576:,.1f} MiB, {analyst.seconds:.1f} s{how})"
        )
        print(f"  report {published.report}")
    else:
        print("  (an earlier as-of than the latest build: history tables only)")
    return 0


def _export(args: argparse.Namespace, settings: Settings) -> int:
    from cdp.processing.activation.export import run_export
    from cdp.processing.segmentation.config import load_segment_config
    from cdp.storage.database import connect

    segments = load_segment_config(settings)
    with connect(settings.storage.db_path) as con, Progress("export", unit="deliveries") as bar:

        def delivered(done: int, total: int) -> None:
            bar.total = total
            bar.update(done)

        report = run_export(
            con, settings, segments, as_of=args.as_of, out_dir=args.out,
            destinations=args.destination or None, progress=delivered,
        )  # fmt: skip
    _print_export(report)
    return 1 if report.failed else 0


def _forget(args: argparse.Namespace, settings: Settings) -> int:
    from cdp.processing.activation.privacy import forget_customer
    from cdp.processing.segmentation.config import load_segment_config
    from cdp.storage.analyst import analyst_path, publish_analyst_database
    from cdp.storage.database import connect

    segments = load_segment_config(settings)
    with connect(settings.storage.db_path) as con:
        report = forget_customer(con, settings, segments, args.customer)
        print(
            f"forgot {report.customer_id}: {report.events_deleted:,} events deleted, "
            f"{report.identifiers} identifiers suppressed"
        )
        # Analysts' copy must not keep what was just deleted until the next build.
        if analyst_path(settings).exists():
            analyst = publish_analyst_database(con, settings)
            print(f"analyst database {analyst.path} republished without them")
    if report.exits is not None:
        _print_export(report.exits)
    print("file destinations list the exits in their next export")
    return 1 if report.exits is not None and report.exits.failed else 0


def _sql(args: argparse.Namespace, settings: Settings) -> int:
    import duckdb

    from cdp.status import open_analyst

    with open_analyst(settings) as con:
        try:
            relation = con.sql(args.query)
        except duckdb.Error as exc:
            raise CdpError(f"query failed: {exc}") from None
        if relation is None:
            print("ok (the statement returned no rows)")
            return 0
        if args.format == "table":
            relation.show(max_rows=args.max_rows, max_width=10_000)
            return 0
        columns, rows = relation.columns, relation.fetchall()
    if args.format == "csv":
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        import json

        for row in rows:
            print(json.dumps(dict(zip(columns, row, strict=True)), default=str))
    return 0


def _shell(args: argparse.Namespace, settings: Settings) -> int:
    import shutil

    from cdp.status import existing_analyst_path

    path = existing_analyst_path(settings)
    duckdb_cli = shutil.which("duckdb")
    if duckdb_cli is None:
        raise CdpError(
            "the duckdb command-line client is not installed "
            '(https://duckdb.org/docs/installation); `cdp sql "..."` queries the same '
            f"database, or open {path} read-only from any DuckDB client"
        )
    os.execv(duckdb_cli, [duckdb_cli, "-readonly", str(path)])
    return 0  # pragma: no cover - execv does not return


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from cdp.status import format_status, gather_status

    print(format_status(gather_status(settings)))
    return 0


def _segments_list(args: argparse.Namespace, settings: Settings) -> int:
    from cdp.processing.segmentation.config import load_segment_config

    config = load_segment_config(settings)
    print(f"{len(config.segments)} segments from {config.source} (all rules valid)")
    for segment in config.segments:
        definition = segment.definition
        targets = ", ".join(definition.destinations) or "(no destination)"
        print(f"  {definition.name:<22} -> {targets}  [consent: {definition.consent}]")
        print(f"      {definition.rule}")
    return 0


# -- helpers ------------------------------------------------------------------------


def _program_name() -> str:
    """How the user can run cdp again: e.g. .venv/bin/cdp when it is not on PATH."""
    import shutil

    invoked = Path(sys.argv[0])
    if invoked.name != "cdp" or shutil.which("cdp") == str(invoked.resolve()):
        return "cdp"
    try:
        return str(invoked.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(invoked)


def _print_export(report: Any) -> None:
    print(f"export as of {report.as_of}:")
    for r in report.results:
        detail = (
            f"{r.members:,} members, +{r.entered:,} / -{r.exited:,}  {r.location}"
            if r.status == "succeeded"
            else r.message
        )
        print(f"  {r.status:<9} {r.segment:<22} -> {r.destination:<14} {detail}")
    if report.failed:
        print(f"{len(report.failed)} failed; their changes are kept for the next export")


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.2f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _print_stats(stats: Any) -> None:
    rate = stats.consumed / stats.elapsed_s if stats.elapsed_s else 0.0
    print(
        f"consumed {stats.consumed:,}: stored {stats.stored:,}, duplicates {stats.duplicates:,}, "
        f"dead-lettered {stats.dead_lettered:,} in {stats.elapsed_s:.1f} s ({rate:,.0f}/s)"
    )
    for kind, count in sorted(stats.dead_letter_kinds.items()):
        print(f"  dead letters {kind:<14} {count:,}")


def _require_kafka(settings: Settings) -> Settings:
    if not settings.kafka.bootstrap_servers:
        raise ConfigError(
            "kafka.bootstrap_servers: no Kafka configured; pass --bootstrap-servers HOST:PORT "
            "or set CDP_KAFKA__BOOTSTRAP_SERVERS (or run `cdp demo`, which starts its own broker)"
        )
    return settings


def _with_db(settings: Settings, path: Path) -> Settings:
    return settings.model_copy(
        update={"storage": settings.storage.model_copy(update={"db_path": path})}
    )


def _stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM/SIGINT finish the current batch, store it, and exit 0."""

    def request_stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)


def _overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    return {
        "kafka": {
            "bootstrap_servers": getattr(args, "bootstrap_servers", None),
            "group_id": getattr(args, "group", None),
        },
        "storage": {"db_path": getattr(args, "db", None)},
        "ingest": {"offset_reset": getattr(args, "offset_reset", None)},
        "collector": {"listen": getattr(args, "listen", None)},
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
        name: str, handler: Callable, help: str, parent: Any = commands
    ) -> argparse.ArgumentParser:
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

    demo = command("demo", _demo, "start a bundled broker, stream a synthetic store, ingest it")
    kafka_flags(demo)
    db_flag(demo)
    store_flags(demo, customers=2000)

    topics = command("topics", None, "manage the family topics").add_subparsers(
        dest="topics_command", required=True, metavar="ACTION"
    )
    kafka_flags(command("create", _topics_create, "create the family topics", topics))

    generate = command("generate", _generate, "write a seeded synthetic store as JSON lines")
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

    produce = command("produce", _produce, "stream a JSON-lines file into the family topics")
    produce.add_argument("file", type=Path)
    kafka_flags(produce)

    load = command("load", _load, "load a JSON-lines file straight into DuckDB (no Kafka)")
    load.add_argument("file", type=Path)
    db_flag(load)

    ingest = command("ingest", _ingest, "consume the topics into DuckDB, exactly once")
    kafka_flags(ingest)
    db_flag(ingest)
    ingest.add_argument("--group", metavar="ID", help="consumer group (kafka.group_id)")
    offset_reset_flag(ingest)
    ingest.add_argument(
        "--until-idle",
        action="store_true",
        help="stop once caught up and nothing new arrives (ingest.idle_timeout_s)",
    )

    run = command("run", _run, "the service: ingest, with profile builds on the schedule")
    kafka_flags(run)
    db_flag(run)
    run.add_argument("--group", metavar="ID", help="consumer group (kafka.group_id)")
    offset_reset_flag(run)

    collect = command(
        "collect", _collect,
        "the HTTP collector: Segment-format events from SDKs into the family topics",
    )  # fmt: skip
    kafka_flags(collect)
    collect.add_argument("--listen", metavar="HOST:PORT", help="address (collector.listen)")

    build = command("build", _build, "build customer profiles, CLV, RFM and store KPIs")
    db_flag(build)
    build.add_argument(
        "--as-of",
        type=_date,
        metavar="YYYY-MM-DD",
        help="use only events up to the end of this day (UTC); default: now",
    )

    export = command("export", _export, "send segments to their destinations (snapshot + diff)")
    db_flag(export)
    export.add_argument(
        "--out", type=Path, metavar="DIR", help="root of file destinations (export.out_dir)"
    )
    export.add_argument(
        "--as-of", type=_date, metavar="YYYY-MM-DD",
        help="membership as of the end of this day (default: the latest build)",
    )  # fmt: skip
    export.add_argument(
        "--destination", action="append", metavar="NAME", help="only this destination (repeatable)"
    )

    forget = command("forget", _forget, "delete a customer everywhere and suppress them")
    forget.add_argument("customer", help="customer id, alias, or identifier like email:ann@x.com")
    db_flag(forget)

    segments = command("segments", None, "inspect the segment definitions").add_subparsers(
        dest="segments_command", required=True, metavar="ACTION"
    )
    command("list", _segments_list, "check every rule and list the segments", segments)

    sql = command("sql", _sql, "run a query against the analyst database")
    sql.add_argument(
        "query", help='e.g. "SELECT rfm_segment, count(*) FROM customer_profiles GROUP BY 1"'
    )
    db_flag(sql)
    sql.add_argument("--format", choices=("table", "csv", "json"), default="table")
    sql.add_argument(
        "--max-rows", type=_positive, default=40, metavar="N", help="table format only"
    )

    db_flag(command("shell", _shell, "open the duckdb CLI on the analyst database (read-only)"))

    status = command("status", _status, "lag, last build and exports, dead letters, sizes")
    kafka_flags(status)
    db_flag(status)
    status.add_argument("--group", metavar="ID", help="consumer group (kafka.group_id)")

    dlq = command("dlq", None, "inspect and replay dead letters").add_subparsers(
        dest="dlq_command", required=True, metavar="ACTION"
    )
    dlq_list = command("list", _dlq_list, "show dead letters with their reasons", dlq)
    db_flag(dlq_list)
    dlq_list.add_argument("--kind", help="only this error kind, e.g. invalid_json")
    dlq_list.add_argument("--limit", type=_positive, default=20, metavar="N")
    dlq_replay = command(
        "replay", _dlq_replay, "re-validate dead letters; good ones move to events", dlq
    )
    db_flag(dlq_replay)
    dlq_replay.add_argument("--kind", help="only this error kind")
    return parser


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
