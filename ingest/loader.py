"""JSON-lines file -> DuckDB without Kafka: backfills, through the same validation.

Lines are validated and written in batches; every line ends up in ``events``,
``dead_letters`` (with line number and raw bytes) or ``duplicate_events``. The
source of each row is ``file:<absolute path>`` with the line number as its offset,
so loading the same file twice stores nothing twice, and each batch is one
transaction with its lines: a load that is killed keeps whole batches, and loading
the file again stores the rest.

Validation is :class:`cdp.ingest.batch_validation.BatchValidator`: DuckDB proves the
common lines valid a whole batch at a time, pydantic judges the others. Batches are
big enough (> 122,880 rows, a DuckDB row group) for DuckDB to write their rows
straight to the database file rather than through the WAL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import duckdb

from cdp.errors import ConfigError
from cdp.ingest.batch_validation import BatchValidator
from cdp.ingest.consumer import IngestStats
from cdp.ingest.validation import ValidatedBatch, ValidationLimits
from cdp.storage.event_store import write_batch

BATCH_LINES = 200_000
_READ_BYTES = 1 << 24


def load_file(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    *,
    limits: ValidationLimits,
    progress: Callable[[IngestStats], None] | None = None,
    batch_lines: int = BATCH_LINES,
) -> IngestStats:
    """Load ``path``. ``limits`` are usually
    ``ValidationLimits.from_settings(settings.ingest)``."""
    source = f"file:{path.resolve()}"
    stats = IngestStats()
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise ConfigError(f"input file {str(path)!r} does not exist") from None
    with handle, BatchValidator(limits) as validator:
        for offsets, values in _batches(handle, batch_lines):
            _store(con, validator.validate(source, offsets, values), stats, progress)
    return stats


def _batches(handle: BinaryIO, batch_lines: int) -> Iterator[tuple[list[int], list[bytes]]]:
    """Non-blank lines in batches, each line keeping its 1-based line number (lines
    end at b"\\n"; trailing b"\\r"s are dropped, as are lines of whitespace only)."""
    offsets: list[int] = []
    values: list[bytes] = []
    line_number = 0
    rest = b""
    while True:
        block = handle.read(_READ_BYTES)
        lines = (rest + block).split(b"\n")
        rest = lines.pop() if block else b""
        for line in lines:
            line_number += 1
            line = line.rstrip(b"\r\n")
            if not line.strip():
                continue
            offsets.append(line_number)
            values.append(line)
            if len(values) >= batch_lines:
                yield offsets, values
                offsets, values = [], []
        if not block:
            break
    if values:
        yield offsets, values


def _store(
    con: duckdb.DuckDBPyConnection,
    validated: ValidatedBatch,
    stats: IngestStats,
    progress: Callable[[IngestStats], None] | None,
) -> None:
    stats.record(validated, write_batch(con, validated.events, validated.dead_letters))
    if progress:
        progress(stats)
