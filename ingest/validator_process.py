"""The validator process: pydantic over polled batches, beside the polling process.

Validation is pure Python; run in the process that also polls Kafka and writes
DuckDB, it would contend with them for the GIL. So ingest hands each polled batch to
one worker process and gets back Arrow tables (:class:`~cdp.ingest.validation.
ValidatedBatch`).

How a batch travels matters as much as where it is validated. A poll is ~6 MB of
message bytes, and its answer was ~8 MB of Arrow while it carried the payloads (see
below). Through the pool's pipe that was hundreds of 64 KB writes and reads, and in
the polling process each of them had to take the GIL back from the poll thread,
which holds it for up to the 5 ms switch interval: the validator sat idle about a
third of the time, waiting for its answer to be read (measured in
benchmarks/ingest_throughput.py). So on Linux each batch goes
in a memory file (``memfd``): the polling process writes the polled records there as
one Arrow stream, the validator opens the file through ``/proc/<pid>/fd`` and writes
its answer into a second one, and only the files' numbers and sizes go through the
pipe. Where memory files are missing or cannot be opened across processes, the
tables travel pickled through the pipe, as before.

The answer carries no payloads: the polling process holds the polled table already,
and takes each accepted event's payload from it by the index the validator returns
(``message_index``). Sending the payloads back cost ~0.3-0.5 us an event, in both
processes, to copy bytes the parent had.

A memory file is closed by the polling process only once the validator is done with
the batch (the future is done): closed earlier, its number could be given to the next
batch's file while the validator still meant the old one.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, replace
from itertools import repeat
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from cdp.ingest.events import Family
from cdp.ingest.validation import (
    DEFAULT_LIMITS,
    ValidatedBatch,
    ValidationLimits,
    validate_messages,
    with_payloads,
)

if TYPE_CHECKING:  # kafka-python costs ~0.17 s to import; cdp load needs none of it
    from kafka.consumer.fetcher import ConsumerRecord

log = logging.getLogger(__name__)

# What a poll of one partition sends: its records' offsets, keys and values.
POLLED_SCHEMA = pa.schema([("offset", pa.int64()), ("key", pa.binary()), ("value", pa.binary())])


@dataclass(frozen=True, slots=True)
class _Partition:
    topic: str
    partition: int
    records: int


@dataclass(frozen=True, slots=True)
class _MemoryFile:
    """A memory file of the polling process, as the validator opens it: through
    ``/proc/<pid>/fd/<fd>``, checked to be the same file (device and inode). A number
    whose file was closed could be given to another: the pool closes the files of
    every batch it fails when it breaks, before it stops a worker still running."""

    pid: int
    fd: int
    identity: tuple[int, int]

    @classmethod
    def create(cls, name: str) -> _MemoryFile:
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
        status = os.fstat(fd)
        return cls(os.getpid(), fd, (status.st_dev, status.st_ino))

    def open(self, flags: int) -> int:
        handle = os.open(f"/proc/{self.pid}/fd/{self.fd}", flags)
        status = os.fstat(handle)
        if (status.st_dev, status.st_ino) != self.identity:
            os.close(handle)
            raise OSError(f"memory file {self.fd} of process {self.pid} is no longer the batch's")
        return handle


@dataclass(frozen=True, slots=True)
class _Request:
    """A polled batch: its partitions in order, and their records as one table, either
    inline or in the memory file ``polled_file`` (``polled_bytes`` long); the answer
    goes into the memory file ``answer_file``, if any."""

    partitions: tuple[_Partition, ...]
    family_by_topic: Mapping[str, Family]
    limits: ValidationLimits
    polled: pa.Table | None = None
    polled_file: _MemoryFile | None = None
    polled_bytes: int = 0
    answer_file: _MemoryFile | None = None


@dataclass(frozen=True, slots=True)
class _Answer:
    """A validated batch: inline, or its two tables as Arrow streams in the request's
    answer file (the events' first, ``events_bytes`` long, ``total_bytes`` in all)."""

    consumed: int
    dead_letter_kinds: dict[str, int]
    batch: ValidatedBatch | None = None
    events_bytes: int = 0
    total_bytes: int = 0


class PendingValidation:
    """A batch handed to the validator: :meth:`result` waits for it. Raises what the
    pool raises (``BrokenExecutor`` if the process died, ``TimeoutError``) and
    ``OSError`` if a memory file could not be read or written."""

    def __init__(
        self, future: Future[_Answer], files: tuple[int, ...], values: pa.ChunkedArray | pa.Array
    ) -> None:
        self._future = future
        self._values: pa.ChunkedArray | pa.Array | None = values
        self._answer_bytes: bytes | None = None
        self._unread: OSError | None = None
        # Set once the answer is read: a future's callbacks run just after its result
        # is set, so result() may return before this one has run.
        self._collected = threading.Event()
        if files:
            future.add_done_callback(lambda done: self._collect(done, files))

    def _collect(self, done: Future[_Answer], files: tuple[int, ...]) -> None:
        """Read the answer from its memory file and close both files, as soon as the
        validator is done (on the pool's thread): see the module docstring."""
        try:
            if not done.cancelled() and done.exception() is None:
                answer = done.result()
                self._answer_bytes = _read_all(files[-1], answer.total_bytes)
        except OSError as exc:  # raised by result(), on the thread that waits for it
            self._unread = exc
        finally:
            for fd in files:
                os.close(fd)
            self._collected.set()

    def done(self) -> bool:
        return self._future.done()

    def cancel(self) -> bool:
        return self._future.cancel()

    def result(self, timeout: float | None = None) -> ValidatedBatch:
        answer = self._future.result(timeout)
        if answer.batch is not None:
            batch = answer.batch
            events, dead_letters = batch.events, batch.dead_letters
        else:
            self._collected.wait()
            if self._unread is not None:
                raise self._unread
            assert self._answer_bytes is not None, "read before the future is done"
            data = pa.py_buffer(self._answer_bytes)
            events = pa.ipc.open_stream(data.slice(0, answer.events_bytes)).read_all()
            dead_letters = pa.ipc.open_stream(data.slice(answer.events_bytes)).read_all()
        values, self._values = self._values, None  # ~6 MB a poll, held no longer
        if values is None or answer.consumed != len(values):
            # The indices would point at another batch's messages.
            raise RuntimeError("the validator's answer is not for this batch, or was read twice")
        events = with_payloads(events, values)
        return ValidatedBatch(events, dead_letters, answer.consumed, answer.dead_letter_kinds)


class ValidatorProcess:
    """The one validator process of a consumer, and how batches travel to it."""

    def __init__(self) -> None:
        """Start the process, already warmed up. Spawned, not forked: the caller may
        already run kafka-python's and DuckDB's threads. The pool starts its process
        on first use, so the ~1 s of imports is paid here rather than mid-stream."""
        self._pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_exit_with_parent,
            initargs=(os.getpid(),),
        )
        try:
            self.pid: int = self._pool.submit(_warm_up).result()
            self._memory_files = _memory_files_work(self._pool)
        except BaseException:
            self._pool.shutdown(cancel_futures=True)
            raise

    @property
    def uses_memory_files(self) -> bool:
        return self._memory_files

    def validate(
        self,
        polled: Iterable[tuple[str, int, list[ConsumerRecord]]],
        family_by_topic: Mapping[str, Family],
        limits: ValidationLimits,
    ) -> PendingValidation:
        """Hand a poll's records, (topic, partition, records) in poll order, to the
        validator. Raises ``BrokenExecutor`` if the process died, ``OSError`` if the
        batch's memory file could not be made or written."""
        partitions, offsets, keys, values = [], [], [], []
        for topic, partition, records in polled:
            partitions.append(_Partition(topic, partition, len(records)))
            offsets += [record.offset for record in records]
            keys += [record.key for record in records]
            values += [record.value for record in records]
        table = pa.Table.from_arrays(
            [pa.array(offsets, pa.int64()), pa.array(keys, pa.binary()), _binary_array(values)],
            schema=POLLED_SCHEMA,
        )
        request = _Request(tuple(partitions), family_by_topic, limits)
        values = table.column("value")
        if not self._memory_files:
            request = replace(request, polled=table)
            return PendingValidation(self._pool.submit(_validate_request, request), (), values)
        files: list[_MemoryFile] = []
        try:
            files.append(_MemoryFile.create("cdp-polled"))
            polled_bytes = _write_own_stream(files[0], table)
            files.append(_MemoryFile.create("cdp-validated"))
            request = replace(
                request, polled_file=files[0], polled_bytes=polled_bytes, answer_file=files[1]
            )
            future = self._pool.submit(_validate_request, request)
        except BaseException:
            for file in files:
                os.close(file.fd)
            raise
        return PendingValidation(future, tuple(file.fd for file in files), values)

    def shutdown(self, *, wait: bool) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=True)


def _binary_array(values: list[bytes | None]) -> pa.Array | pa.ChunkedArray:
    """A poll's record values as an Arrow binary array, its data one join of them: built
    by ``pa.array``, the ~6 MB buffer grew by reallocation as the values were copied in
    (0.54 against 0.32 us an event on the poll thread, with the stream written straight
    to its memory file). Null values (tombstones), and a poll past 2 GiB, take
    ``pa.array``'s way."""
    try:
        lengths = np.fromiter(map(len, values), dtype=np.int64, count=len(values))
        data = b"".join(values)
    except TypeError:  # a None (or a str, which kafka-python does not hand out)
        return pa.array(values, pa.binary())
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    # Lengths that are not byte counts (a memoryview of wider items) do not add up.
    if offsets[-1] != len(data) or offsets[-1] > np.iinfo(np.int32).max:
        return pa.array(values, pa.binary())
    buffers = [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)]
    return pa.Array.from_buffers(pa.binary(), len(values), buffers)


def _write_own_stream(file: _MemoryFile, table: pa.Table) -> int:
    """Write ``table`` as an Arrow stream into one of this process's memory files,
    straight from its buffers; return its size. Serialized to a buffer first and then
    copied in, it cost ~0.3 us an event more on the poll thread (the buffer, too,
    grew by reallocation)."""
    with pa.OSFile(f"/proc/self/fd/{file.fd}", "wb") as sink:
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.tell()


def _to_stream(table: pa.Table) -> pa.Buffer:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _memory_files_work(pool: ProcessPoolExecutor) -> bool:
    """Whether the validator can open this process's memory files (Linux with /proc)."""
    try:
        probe = _MemoryFile.create("cdp-probe")
    except (AttributeError, OSError):
        works = False
    else:
        try:
            _write_all(probe.fd, b"cdp", 0)
            works = pool.submit(_reads_memory_file, probe).result()
        finally:
            os.close(probe.fd)
    if not works:
        log.info("batches travel to the validator process through its pipe (no memory files)")
    return works


def _reads_memory_file(file: _MemoryFile) -> bool:
    try:
        return _read_memory_file(file, 3) == b"cdp"
    except OSError:
        return False


def _read_memory_file(file: _MemoryFile, size: int) -> bytes:
    handle = file.open(os.O_RDONLY)
    try:
        return _read_all(handle, size)
    finally:
        os.close(handle)


def _read_all(fd: int, size: int) -> bytes:
    """``size`` bytes from the start of ``fd`` (one call moves at most ~2 GiB)."""
    data = os.pread(fd, size, 0)
    while len(data) < size:
        part = os.pread(fd, size - len(data), len(data))
        if not part:
            raise OSError(f"memory file ended after {len(data)} of {size} bytes")
        data += part
    return data


def _write_all(fd: int, data: bytes | pa.Buffer, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


# -- in the validator process ---------------------------------------------------------


def _validate_request(request: _Request) -> _Answer:
    """Validate a polled batch; runs in the validator process.

    The garbage collector is off meanwhile: a batch makes only acyclic objects (the
    events' dicts and lists, tuples), freed by reference counting, and each batch set
    off full collections (~0.4 us a message)."""
    if request.polled is not None:
        table = request.polled
    else:
        assert request.polled_file is not None
        stream = _read_memory_file(request.polled_file, request.polled_bytes)
        table = pa.ipc.open_stream(stream).read_all()
    messages = _messages(request.partitions, table)
    collecting = gc.isenabled()
    gc.disable()
    try:
        batch = validate_messages(
            messages, request.family_by_topic, request.limits, with_payload=False
        )
    finally:
        if collecting:
            gc.enable()
    kinds = batch.dead_letter_kinds
    if request.answer_file is None:
        return _Answer(batch.consumed, kinds, batch=batch)
    events, dead_letters = _to_stream(batch.events), _to_stream(batch.dead_letters)
    handle = request.answer_file.open(os.O_WRONLY)
    try:
        _write_all(handle, events, 0)
        _write_all(handle, dead_letters, events.size)
    finally:
        os.close(handle)
    return _Answer(
        batch.consumed, kinds, events_bytes=events.size, total_bytes=events.size + dead_letters.size
    )


def _messages(partitions: tuple[_Partition, ...], table: pa.Table) -> Iterable[tuple]:
    """(value, topic, partition, offset, key) of each polled record, in poll order."""
    offsets = table.column("offset").to_pylist()
    keys = table.column("key").to_pylist()
    values = table.column("value").to_pylist()
    start = 0
    for part in partitions:
        end = start + part.records
        yield from zip(
            values[start:end],
            repeat(part.topic),
            repeat(part.partition),
            offsets[start:end],
            keys[start:end],
            strict=False,  # the repeats never end
        )
        start = end


def _warm_up() -> int:
    """The validator process's first call: import and build all that validation uses,
    then move it out of the garbage collector's sight; returns the process's pid. It
    lives as long as the process (~64k objects: pydantic's, pyarrow's, kafka-python's
    modules), and every full collection, which the objects of each batch set off a few
    times per 100k messages, walked all of it: ~9% of validation's time (8.9 -> 8.1
    us/message)."""
    empty = pa.Table.from_pylist([], schema=POLLED_SCHEMA)
    _validate_request(_Request((), {}, DEFAULT_LIMITS, polled=empty))
    gc.collect()
    gc.freeze()
    return os.getpid()


def _exit_with_parent(parent_pid: int) -> None:
    """The validator process's initializer: exit once the process that started it is
    gone. A parent killed outright (``kill -9``, the OOM killer) never shuts its pool
    down, and the worker, blocked reading its call queue, would otherwise live on."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, name="cdp-exit-with-parent", daemon=True).start()
