"""JSON-lines file -> DuckDB without Kafka: backfills, through the same validation.

Lines are validated and written in batches; every line ends up in ``events``,
``dead_letters`` (with line number and raw bytes) or ``duplicate_events``. The
source of each row is ``file:<absolute path>`` with the line number as its offset,
so loading the same file twice stores nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb

from cdp.errors import ConfigError
from cdp.ingest.consumer import IngestStats
from cdp.ingest.validation import RawMessage, validate_batch
from cdp.storage.event_store import write_batch

BATCH_LINES = 50_000


def load_file(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    *,
    max_event_bytes: int,
    progress: Callable[[IngestStats], None] | None = None,
) -> IngestStats:
    source = f"file:{path.resolve()}"
    stats = IngestStats()
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise ConfigError(f"input file {str(path)!r} does not exist") from None
    with handle:
        batch: list[RawMessage] = []
        for line_number, line in enumerate(handle, start=1):
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            batch.append(RawMessage(line, source, 0, line_number))
            if len(batch) >= BATCH_LINES:
                _write(con, batch, max_event_bytes, stats)
                batch = []
                if progress:
                    progress(stats)
        if batch:
            _write(con, batch, max_event_bytes, stats)
    return stats


def _write(
    con: duckdb.DuckDBPyConnection,
    batch: list[RawMessage],
    max_event_bytes: int,
    stats: IngestStats,
) -> None:
    validated = validate_batch(batch, None, max_event_bytes)
    stats.record(validated, write_batch(con, validated.events, validated.dead_letters))
