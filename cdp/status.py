"""``cdp status``: how the pipeline is doing, readable while ``cdp run`` holds the
live database.

DuckDB lets no other process open a file that one process writes, so the figures
come from the live database when it is free and from the analyst snapshot when it
is not (the output says which). Consumer lag comes from Kafka: the end offset of
every partition against the group's committed offset (which ingest advances after
each stored batch), when a broker is configured and answers.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import duckdb
from kafka import KafkaConsumer, TopicPartition

from cdp.errors import CdpError, DatabaseLocked
from cdp.ingest.broker import BOOTSTRAP_TIMEOUT_MS, bootstrap_list, describe_kafka_error
from cdp.processing.stages.clv_backtest import describe
from cdp.settings import Settings
from cdp.storage.analyst_events import parts_bytes
from cdp.storage.database import connect
from cdp.storage.paths import analyst_path, events_folder, report_path


@dataclass
class PartitionLag:
    topic: str
    partition: int
    end_offset: int
    committed: int | None

    @property
    def lag(self) -> int:
        return self.end_offset - (self.committed or 0)


@dataclass(frozen=True)
class LastBuild:
    build_id: int
    as_of: datetime
    started_at: datetime
    finished_at: datetime | None  # None while it runs
    status: str
    customers: int | None
    message: str | None  # what went wrong, for every outcome but success


@dataclass(frozen=True)
class LastExport:
    """The latest export run of one segment to one destination."""

    destination: str
    segment: str
    as_of: date
    status: str
    seconds: float | None  # None while it runs
    members: int | None
    entered: int | None
    exited: int | None
    message: str | None


@dataclass
class Status:
    source: str  # which database the figures come from
    files: dict[str, tuple[Path, int | None]] = field(default_factory=dict)
    last_build: LastBuild | None = None
    last_exports: list[LastExport] = field(default_factory=list)
    dead_letters: int | None = None
    backtest: str | None = None  # the latest build's backtest, of the model it chose
    lag: list[PartitionLag] | None = None
    lag_error: str | None = None


def gather_status(settings: Settings) -> Status:
    live = settings.storage.db_path
    analyst = analyst_path(settings)
    status = Status(source="")
    for name, path in (
        ("live database", live),
        ("live write-ahead log", live.with_name(live.name + ".wal")),
        ("analyst database", analyst),
        ("analyst event parts", events_folder(analyst)),
        ("report", report_path(settings)),
    ):
        status.files[name] = (path, _size(path))
    con = _open_readable(live, analyst, status)
    if con is not None:
        with contextlib.closing(con):
            _read_tables(con, status)
    if settings.kafka.bootstrap_servers:
        try:
            status.lag = consumer_lag(settings)
        except CdpError as exc:
            status.lag_error = str(exc)
        except Exception as exc:  # a broker that answers oddly: report, don't fail
            status.lag_error = describe_kafka_error(exc)
    return status


def _size(path: Path) -> int | None:
    """A file's size, the event parts' total, or None when absent."""
    if path.is_dir():
        return parts_bytes(path)
    return path.stat().st_size if path.exists() else None


def _open_readable(live: Path, analyst: Path, status: Status) -> duckdb.DuckDBPyConnection | None:
    if live.exists():
        try:
            con = connect(live, read_only=True)
            status.source = f"live database {live}"
            return con
        except DatabaseLocked:
            pass  # held by the writer (cdp run): fall back to the snapshot
    if analyst.exists():
        status.source = f"analyst snapshot {analyst} (the live database is in use)"
        return connect(analyst, read_only=True)
    status.source = "no database yet"
    return None


def _read_tables(con: duckdb.DuckDBPyConnection, status: Status) -> None:
    builds = con.execute(
        "SELECT build_id, as_of, started_at, finished_at, status, customers, message FROM builds "
        "ORDER BY build_id DESC LIMIT 1"
    ).fetchall()
    status.last_build = LastBuild(*builds[0]) if builds else None
    exports = con.execute(
        "SELECT destination, segment, as_of, status, date_diff('millisecond', started_at, "
        "finished_at) / 1000.0, members, entered, exited, message FROM export_runs "
        "QUALIFY row_number() OVER (PARTITION BY destination, segment "
        "ORDER BY export_run_id DESC) = 1 ORDER BY destination, segment"
    ).fetchall()
    status.last_exports = [LastExport(*row) for row in exports]
    status.dead_letters = con.execute("SELECT count(*) FROM dead_letters").fetchall()[0][0]
    status.backtest = _latest_backtest(con)


def _latest_backtest(con: duckdb.DuckDBPyConnection) -> str | None:
    """The latest backtest of the model chosen (any model when none was), in one line."""
    try:
        cursor = con.execute(
            "FROM clv_backtests ORDER BY as_of DESC, chosen DESC, mae NULLS LAST LIMIT 1"
        )
    except duckdb.CatalogException:  # an analyst snapshot from before backtests
        return None
    row = cursor.fetchone()
    if row is None:
        return None
    columns = [column[0] for column in cursor.description]
    row = dict(zip(columns, row, strict=True))
    return f"as of {row['as_of']}: {describe(row)}"


def consumer_lag(settings: Settings) -> list[PartitionLag]:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_list(settings.kafka.bootstrap_servers),
        group_id=settings.kafka.group_id,
        enable_auto_commit=False,
        client_id=f"{settings.kafka.client_id}-status",
        bootstrap_timeout_ms=BOOTSTRAP_TIMEOUT_MS,
    )
    try:
        partitions = [
            TopicPartition(topic, partition)
            for topic in sorted(set(settings.topics.by_family().values()))
            for partition in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        ends = consumer.end_offsets(partitions) if partitions else {}
        return [
            PartitionLag(tp.topic, tp.partition, ends.get(tp, 0), consumer.committed(tp))
            for tp in partitions
        ]
    finally:
        consumer.close()


def format_status(status: Status) -> str:
    lines = [f"figures from: {status.source}"]
    for name, (path, size) in status.files.items():
        shown = f"{size / 1_048_576:,.1f} MiB" if size is not None else "absent"
        lines.append(f"  {name:<21} {shown:>12}  {path}")
    build = status.last_build
    if build:
        took = (
            f"{(build.finished_at - build.started_at).total_seconds():.1f} s"
            if build.finished_at
            else "running"
        )
        # Every outcome but success has a message saying what went wrong (failed,
        # publish_failed, interrupted).
        failed = build.message and build.status != "succeeded"
        lines.append(
            f"last build: #{build.build_id} {build.status} as of {build.as_of:%Y-%m-%d %H:%M} "
            f"in {took}, {build.customers or 0:,} customers"
            + (f" ({build.message})" if failed else "")
        )
    else:
        lines.append("last build: none yet")
    if status.last_exports:
        lines.append("last export per segment and destination:")
        for run in status.last_exports:
            detail = (
                f"{run.members or 0:,} members, +{run.entered or 0:,}/-{run.exited or 0:,}"
                if run.status == "succeeded"
                else (run.message or "")
            )
            took = f"{run.seconds:.1f} s" if run.seconds is not None else "-"
            lines.append(
                f"  {run.segment:<22} -> {run.destination:<14} {run.as_of} {run.status:<9} "
                f"{took:>7}  {detail}"
            )
    else:
        lines.append("last export: none yet")
    if status.backtest is not None:
        lines.append(f"CLV backtest {status.backtest}")
    if status.dead_letters is not None:
        lines.append(f"dead letters: {status.dead_letters:,}")
    if status.lag is not None:
        total = sum(p.lag for p in status.lag)
        lines.append(f"consumer lag: {total:,} messages")
        for p in status.lag:
            committed = "none" if p.committed is None else f"{p.committed:,}"
            lines.append(
                f"  {p.topic}[{p.partition}]  end {p.end_offset:,}  committed {committed}  "
                f"lag {p.lag:,}"
            )
    elif status.lag_error:
        lines.append(f"consumer lag: unavailable ({status.lag_error})")
    else:
        lines.append("consumer lag: no Kafka configured (kafka.bootstrap_servers)")
    return "\n".join(lines)


def existing_analyst_path(settings: Settings) -> Path:
    """The analyst database's path, or a CdpError saying how to get one."""
    path = analyst_path(settings)
    if not path.exists():
        raise CdpError(
            f"no analyst database at {path} yet: it is published by every build "
            "(`cdp build`, or `cdp run` once it has caught up)"
        )
    return path


def open_analyst(settings: Settings) -> duckdb.DuckDBPyConnection:
    """The analyst database, read-only, for ``cdp sql``."""
    return connect(existing_analyst_path(settings), read_only=True)
