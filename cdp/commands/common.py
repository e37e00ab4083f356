"""What several commands share: printing ingest statistics and export reports, and
the settings checks and signal handling of the long-running commands."""

from __future__ import annotations

import signal
import threading
from typing import TYPE_CHECKING

from cdp.errors import ConfigError
from cdp.settings import Settings

if TYPE_CHECKING:  # types only: importing them would load Kafka for every command
    from cdp.ingest.consumer import IngestStats
    from cdp.processing.activation.export import ExportReport


def print_export(report: ExportReport) -> None:
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


def print_stats(stats: IngestStats) -> None:
    rate = stats.consumed / stats.elapsed_s if stats.elapsed_s else 0.0
    print(
        f"consumed {stats.consumed:,}: stored {stats.stored:,}, duplicates {stats.duplicates:,}, "
        f"dead-lettered {stats.dead_lettered:,} in {stats.elapsed_s:.1f} s ({rate:,.0f}/s)"
    )
    for kind, count in sorted(stats.dead_letter_kinds.items()):
        print(f"  dead letters {kind:<14} {count:,}")


def require_kafka(settings: Settings) -> Settings:
    if not settings.kafka.bootstrap_servers:
        raise ConfigError(
            "kafka.bootstrap_servers: no Kafka configured; pass --bootstrap-servers HOST:PORT "
            "or set CDP_KAFKA__BOOTSTRAP_SERVERS (or run `cdp demo`, which starts its own broker)"
        )
    return settings


def stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM/SIGINT finish the current batch, store it, and exit 0."""

    def request_stop(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
