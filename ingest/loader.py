"""JSON-lines file -> DuckDB without Kafka: backfills, through the same validation.

Lines are validated and written in batches; every line ends up in ``events``,
``dead_letters`` (with line number and raw bytes) or ``duplicate_events``. The
source of each row is ``file:<absolute path>`` with the line number as its offset,
so loading the same file twice stores nothing twice.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import BrokenExecutor, Future
from pathlib import Path
from typing import BinaryIO

import duckdb

from cdp.errors import ConfigError, IngestError
from cdp.ingest.consumer import IngestStats
from cdp.ingest.validation import (
    PartitionSlice,
    ValidatedBatch,
    ValidationLimits,
    start_validator_process,
    validate_slices,
)
from cdp.storage.event_store import write_batch

BATCH_LINES = 50_000


def load_file(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    *,
    limits: ValidationLimits,
    progress: Callable[[IngestStats], None] | None = None,
) -> IngestStats:
    """Load ``path``; the next batch is validated (in the validator process) while the
    current one is written, as in ``cdp ingest``. ``limits`` are usually
    ``ValidationLimits.from_settings(settings.ingest)``. A validator process that dies
    (killed, out of memory) is an :class:`IngestError`; the batches stored stay."""
    source = f"file:{path.resolve()}"
    stats = IngestStats()
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise ConfigError(f"input file {str(path)!r} does not exist") from None
    with handle:
        try:
            with start_validator_process() as validator:
                in_flight: deque[Future[ValidatedBatch]] = deque()
                for chunk in _chunks(handle, source):
                    in_flight.append(validator.submit(validate_slices, [chunk], {}, limits))
                    if len(in_flight) > 1:
                        _store(con, in_flight.popleft().result(), stats, progress)
                while in_flight:
                    _store(con, in_flight.popleft().result(), stats, progress)
        except BrokenExecutor as exc:  # killed, or out of memory
            # Each batch is stored in one transaction with its line numbers: a re-run
            # stores the rest, and nothing twice.
            raise IngestError(
                f"the validator process died ({exc}); load the file again to store the rest"
            ) from None
    return stats


def _chunks(handle: BinaryIO, source: str) -> Iterator[PartitionSlice]:
    """Non-blank lines in batches, each line keeping its 1-based line number."""
    offsets: list[int] = []
    values: list[bytes | None] = []
    for line_number, line in enumerate(handle, start=1):
        line = line.rstrip(b"\r\n")
        if not line.strip():
            continue
        offsets.append(line_number)
        values.append(line)
        if len(values) >= BATCH_LINES:
            yield PartitionSlice(source, 0, offsets, [None] * len(values), values)
            offsets, values = [], []
    if values:
        yield PartitionSlice(source, 0, offsets, [None] * len(values), values)


def _store(
    con: duckdb.DuckDBPyConnection,
    validated: ValidatedBatch,
    stats: IngestStats,
    progress: Callable[[IngestStats], None] | None,
) -> None:
    stats.record(validated, write_batch(con, validated.events, validated.dead_letters))
    if progress:
        progress(stats)
