"""JSON-lines file -> DuckDB without Kafka: backfills, through the same validation.

Lines are validated and written in batches; every line ends up in ``events``,
``dead_letters`` (with line number and raw bytes) or ``duplicate_events``. The
source of each row is ``file:<absolute path>`` with the line number as its offset,
and lines of the file an earlier load stored are skipped (whatever their event time:
the duplicate window of :mod:`cdp.storage.event_store` would let old ones in again),
so loading the same file twice stores nothing twice. Each batch is one transaction
with its lines: a load that is killed keeps whole batches, and loading the file
again stores the rest.

Validation is :class:`cdp.ingest.batch_validation.BatchValidator`: DuckDB proves the
common lines valid a whole batch at a time, pydantic judges the others. Batches are
big enough (> 122,880 rows, a DuckDB row group) for DuckDB to write their rows
straight to the database file rather than through the WAL.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cdp.errors import ConfigError, IngestError
from cdp.ingest.batch_validation import BatchValidator
from cdp.ingest.stats import IngestStats
from cdp.ingest.validation import ValidatedBatch, ValidationLimits
from cdp.settings import DEFAULT_DUPLICATE_WINDOW
from cdp.storage.event_store import write_batch

BATCH_LINES = 200_000
# A batch also ends before its lines pass this many bytes: 200,000 lines of up to
# ingest.max_event_bytes (256 KiB) would be 50 GB. Two batches are in memory at once,
# each held a few times over (the blocks' lines, the payloads taken from them, DuckDB's
# copies): 64 MB, ~180,000 generated lines (~370 B), kept cdp load ~0.1 GiB smaller
# than 96 MB did, still more than a row group per batch.
BATCH_BYTES = 64 * 1024 * 1024
_READ_BYTES = 1 << 24
# The longest line cdp load takes: an Arrow binary value's limit. A longer one is not
# an event (ingest.max_event_bytes is 256 KiB by default); it stops the load with an
# error naming it, rather than a traceback from Arrow.
_LONGEST_LINE = (1 << 31) - 1


def load_file(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    *,
    limits: ValidationLimits,
    duplicate_window: timedelta = DEFAULT_DUPLICATE_WINDOW,
    progress: Callable[[IngestStats], None] | None = None,
    batch_lines: int = BATCH_LINES,
    batch_bytes: int = BATCH_BYTES,
) -> IngestStats:
    """Load ``path``; the next batch is read and validated (in a thread, on a DuckDB
    connection of its own) while the current one is written. ``limits`` and
    ``duplicate_window`` come from ``settings.ingest`` (``ValidationLimits.from_settings``)."""
    source = f"file:{path.resolve()}"
    stats = IngestStats()
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise ConfigError(f"input file {str(path)!r} does not exist") from None
    stored_lines = _lines_stored_before(con, source)  # sorted
    with handle, _Validating(handle, source, limits, batch_lines, batch_bytes) as batches:
        for validated in batches:
            if stored_lines is not None:
                validated = _without_stored_lines(validated, stored_lines)
            write = write_batch(
                con,
                validated.events,
                validated.dead_letters,
                duplicate_window=duplicate_window,
            )
            stats.record(validated, write)
            if progress:
                progress(stats)
    return stats


def _lines_stored_before(con: duckdb.DuckDBPyConnection, source: str) -> np.ndarray | None:
    """The line numbers of ``source`` an earlier load stored as events or copies, None
    if none: one scan of a column per load (the usual file was never loaded)."""
    lines = con.execute(  # execute(), not sql(): see event_store.insert_events
        "SELECT source_offset FROM events WHERE source_topic = $source "
        "UNION ALL SELECT source_offset FROM duplicate_events WHERE source_topic = $source",
        {"source": source},
    ).fetchnumpy()["source_offset"]
    return np.sort(lines) if len(lines) else None


def _without_stored_lines(validated: ValidatedBatch, stored_lines: np.ndarray) -> ValidatedBatch:
    """``validated`` without the lines an earlier load of the file stored as events or
    copies (dead letters are stored at most once per line by their table's key). Only
    the stored lines within the batch's range are looked up: a set of all of them per
    batch cost ~3 s a batch when resuming a 20M-line file."""
    events = validated.events
    if not events.num_rows:
        return validated
    offsets = events.column("source_offset")
    first, last = pc.min_max(offsets).values()
    within = stored_lines[
        np.searchsorted(stored_lines, first.as_py(), "left") : np.searchsorted(
            stored_lines, last.as_py(), "right"
        )
    ]
    if not len(within):
        return validated
    stored = pc.is_in(offsets, value_set=pa.array(within, pa.int64()))
    return replace(validated, events=events.filter(pc.invert(stored)))


class _Validating:
    """Validated batches of a file, made one ahead in a thread. DuckDB releases the
    GIL while it works (pydantic, which does not, judges only the few lines DuckDB
    cannot prove valid), so validating the next batch overlaps with writing this one
    (~1/3 less wall time on two cores)."""

    def __init__(
        self, handle: BinaryIO, source: str, limits: ValidationLimits, lines: int, size: int
    ):
        self._queue: queue.Queue[ValidatedBatch | BaseException | None] = queue.Queue(1)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(handle, source, limits, lines, size), name="cdp-load-validate"
        )

    def __enter__(self) -> Iterator[ValidatedBatch]:
        self._thread.start()
        return self._batches()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _batches(self) -> Iterator[ValidatedBatch]:
        while (item := self._queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item

    def _run(
        self, handle: BinaryIO, source: str, limits: ValidationLimits, lines: int, size: int
    ) -> None:
        try:
            with BatchValidator(limits) as validator:
                for offsets, values in _batches(handle, lines, size):
                    if not self._put(validator.validate(source, offsets, values)):
                        return
            self._put(None)
        except BaseException as exc:  # handed to the writing thread, which raises it
            self._put(exc)

    def _put(self, item: ValidatedBatch | BaseException | None) -> bool:
        """Hand ``item`` over; False if the writing side stopped first."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False


def _batches(
    handle: BinaryIO, batch_lines: int, batch_bytes: int
) -> Iterator[tuple[pa.ChunkedArray, pa.ChunkedArray]]:
    """Non-blank lines in batches of at most ``batch_lines`` lines and, unless one line
    is longer, ``batch_bytes`` bytes: (1-based line numbers, lines as binary). Lines end
    at b"\\n"; trailing b"\\r"s are dropped, as are lines of whitespace only.

    Split in C, a block at a time, with no Python object per line: a loop over
    ``bytes.split`` cost ~1 us a line, and building the Arrow array of its bytes
    objects up to ~1.5 more, on the thread that also hands DuckDB its batches. A
    batch is chunks of the blocks' lines, not one array: each copy of a batch's bytes
    is ~64 MB of memory to fill."""
    numbers: list[pa.Array] = []
    lines: list[pa.Array] = []
    held = held_bytes = 0
    line_number = 0
    for piece in _pieces(handle):
        piece_numbers = pa.array(
            np.arange(line_number + 1, line_number + 1 + len(piece), dtype=np.int64)
        )
        line_number += len(piece)
        piece_numbers, piece = _without_blank_lines(piece_numbers, _without_trailing_cr(piece))
        sizes = np.diff(_offsets(piece))
        ends = np.cumsum(sizes)  # the bytes of the piece's lines up to each one's end
        start = 0
        while start < len(piece):
            before = int(ends[start - 1]) if start else 0
            fitting = int(
                np.searchsorted(ends[start:], before + batch_bytes - held_bytes, side="right")
            )
            if not held:
                fitting = max(fitting, 1)  # a line longer than batch_bytes goes alone
            take = min(fitting, batch_lines - held, len(piece) - start)
            if take:
                numbers.append(piece_numbers.slice(start, take))
                lines.append(piece.slice(start, take))
                held += take
                held_bytes += int(sizes[start : start + take].sum())
                start += take
            if held == batch_lines or start < len(piece):  # full, by lines or by bytes
                yield _joined(numbers, lines)
                numbers, lines, held, held_bytes = [], [], 0, 0
    if held:
        yield _joined(numbers, lines)


def _pieces(handle: BinaryIO) -> Iterator[pa.LargeBinaryArray]:
    """The file's lines (with their b"\\r"s), in order, as arrays: for each block read,
    the line it ends that began before it (on its own), then the lines it holds whole;
    last, the line the file ends with (empty if it ends with b"\\n")."""
    unfinished = b""  # the start of a line the previous block did not end
    lines_before = 0
    while block := handle.read(_READ_BYTES):
        split = _split_lines(block)
        if len(split) == 1:  # no line ends in this block
            unfinished += block
            _check_length(unfinished, lines_before + 1, handle)
            continue
        first = unfinished + split[0].as_py()
        _check_length(first, lines_before + 1, handle)
        yield pa.array([first], pa.large_binary())
        yield split.slice(1, len(split) - 2)
        lines_before += len(split) - 1
        unfinished = split[-1].as_py()
    yield pa.array([unfinished], pa.large_binary())  # the last line, maybe empty


def _check_length(line: bytes, number: int, handle: BinaryIO) -> None:
    if len(line) > _LONGEST_LINE:
        name = getattr(handle, "name", "the input")
        raise IngestError(
            f"line {number} of {name} is longer than {_LONGEST_LINE:,} bytes, more than"
            " cdp load can hold as one event; split the file there or remove the line"
        )


_WHITESPACE = b" \t\n\r\x0b\x0c"  # what bytes.strip() strips


def _split_lines(block: bytes) -> pa.LargeBinaryArray:
    """``block`` split at each b"\\n" (read in place: one copy, the lines')."""
    whole = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(),
        1,
        [None, pa.py_buffer(np.array([0, len(block)], dtype=np.int64)), pa.py_buffer(block)],
    )
    return pc.split_pattern(whole, pattern=b"\n").flatten()


def _without_trailing_cr(lines: pa.LargeBinaryArray) -> pa.LargeBinaryArray:
    """``lines`` without the b"\\r"s they end with, in one pass: the bytes are viewed as
    text for an ASCII trim, which looks at bytes only (so invalid UTF-8 is no matter)."""
    if not pc.any(pc.ends_with(lines.view(pa.large_string()), "\r")).as_py():
        return lines
    return pc.ascii_rtrim(lines.view(pa.large_string()), characters="\r").view(pa.large_binary())


def _without_blank_lines(
    numbers: pa.Array, lines: pa.LargeBinaryArray
) -> tuple[pa.Array, pa.LargeBinaryArray]:
    """Only a line that is empty or starts with whitespace can be blank: those few
    are looked at one by one."""
    offsets = _offsets(lines)
    data = np.frombuffer(lines.buffers()[2] or b"", dtype=np.uint8)
    starts, ends = offsets[:-1], offsets[1:]
    maybe_blank = starts == ends
    if len(data):
        first = data[np.minimum(starts, len(data) - 1)]
        maybe_blank |= np.isin(first, np.frombuffer(_WHITESPACE, dtype=np.uint8))
    blank = np.zeros(len(lines), dtype=bool)
    for index in np.flatnonzero(maybe_blank):
        blank[index] = not lines[index].as_py().strip()
    if not blank.any():
        return numbers, lines
    return numbers.filter(~blank), lines.filter(~blank)


def _offsets(lines: pa.LargeBinaryArray) -> np.ndarray:
    """Where each line starts in the data buffer, and where the last ends."""
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)
    return offsets[lines.offset : lines.offset + len(lines) + 1]


def _joined(
    numbers: list[pa.Array], lines: list[pa.Array]
) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    return pa.chunked_array(numbers), pa.chunked_array([c.cast(pa.binary()) for c in lines])
