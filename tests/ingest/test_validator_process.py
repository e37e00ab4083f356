import array
import gc
import os
import subprocess
import sys
import time

import pyarrow as pa
import pytest

from cdp.ingest.events import Family
from cdp.ingest.validation import RawMessage, ValidationLimits, validate_batch
from cdp.ingest.validator_process import ValidatorProcess, _binary_array, _MemoryFile
from tests.helpers import encode, event

TOPICS = {"t.purchases": Family.PURCHASE, "t.browse": Family.BROWSE}
LIMITS = ValidationLimits()


@pytest.fixture(scope="module")
def validator():
    process = ValidatorProcess()
    yield process
    process.shutdown(wait=True)


def _poll() -> list[tuple[str, int, list[RawMessage]]]:
    """Two partitions' records with every kind of outcome, keys and offset gaps."""
    browse = [
        RawMessage(encode(event("page_viewed", f"b{n}")), "t.browse", 3, 10 + 2 * n, b"k%d" % n)
        for n in range(500)
    ]
    browse += [
        RawMessage(None, "t.browse", 3, 2000),
        RawMessage(b"", "t.browse", 3, 2001, b"key"),
        RawMessage(b"{not json", "t.browse", 3, 2002),
        RawMessage(b"\xff\xfe", "t.browse", 3, 2003),
        RawMessage(encode(event("order_completed", "wrong")), "t.browse", 3, 2004),
    ]
    purchases = [
        RawMessage(encode(event("order_completed", f"p{n}")), "t.purchases", 0, n)
        for n in range(300)
    ]
    return [("t.browse", 3, browse), ("t.purchases", 0, purchases)]


def _expected(poll) -> tuple:
    batch = validate_batch([m for _, _, records in poll for m in records], TOPICS, LIMITS)
    return batch.events, batch.dead_letters, batch.consumed


def test_a_batch_comes_back_as_the_same_tables_as_validating_it_in_process(validator):
    poll = _poll()
    batch = validator.validate(poll, TOPICS, LIMITS).result(timeout=30)
    events, dead_letters, consumed = _expected(poll)
    assert batch.consumed == consumed == 805
    assert batch.events.equals(events)
    assert batch.dead_letters.equals(dead_letters)
    assert batch.dead_letter_kinds == {
        "empty": 2,
        "invalid_json": 1,
        "not_utf8": 1,
        "wrong_topic": 1,
    }


def test_on_linux_batches_travel_in_memory_files_not_through_the_pipe(validator):
    assert validator.uses_memory_files == sys.platform.startswith("linux")


def test_without_memory_files_batches_travel_through_the_pipe_alike(validator, monkeypatch):
    monkeypatch.setattr(validator, "_memory_files", False)
    poll = _poll()
    batch = validator.validate(poll, TOPICS, LIMITS).result(timeout=30)
    events, dead_letters, _ = _expected(poll)
    assert batch.events.equals(events)
    assert batch.dead_letters.equals(dead_letters)


def test_memory_files_are_closed_once_each_batch_is_done_read_or_cancelled(validator):
    def open_files() -> int:
        return len(os.listdir("/proc/self/fd"))

    before = open_files()
    pending = [validator.validate(_poll(), TOPICS, LIMITS) for _ in range(6)]
    pending[-1].cancel()  # likely before the validator reaches it; closed either way
    for batch in pending[:-1]:
        batch.result(timeout=30)
    deadline = time.monotonic() + 10
    while open_files() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert open_files() == before


def test_the_validator_process_keeps_its_start_up_heap_out_of_the_garbage_collector(validator):
    # Frozen: full collections, set off by every batch, no longer walk it.
    assert validator._pool.submit(gc.get_freeze_count).result() > 10_000


def test_the_validator_process_exits_when_its_parent_is_killed_outright():
    # A parent that starts the validator, reports its pid, then waits to be killed.
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import time\n"
                "from cdp.ingest.validator_process import ValidatorProcess\n"
                "print(ValidatorProcess().pid, flush=True)\n"
                "time.sleep(120)\n"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        worker = int(parent.stdout.readline())
        os.kill(worker, 0)  # running
        parent.kill()  # SIGKILL: no shutdown of the pool
        parent.wait(timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and _running(worker):
            time.sleep(0.2)
        assert not _running(worker), "the validator process outlived its parent"
    finally:
        parent.kill()


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # An exited orphan is reaped by init; until then it shows as a zombie.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ")[1][0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="memory files are Linux's")
def test_a_memory_file_number_given_to_another_file_is_refused():
    file = _MemoryFile.create("cdp-test")
    os.close(file.fd)
    other = os.memfd_create("cdp-other")  # the lowest free number: the one just closed
    try:
        assert other == file.fd
        with pytest.raises(OSError, match="no longer the batch's"):
            file.open(os.O_RDONLY)
    finally:
        os.close(other)


@pytest.mark.parametrize(
    "values",
    [
        [b'{"a": 1}', b"", b"\xff\x00 raw bytes", "é".encode() * 300],
        [b"x", None, b"y"],  # a tombstone
        [b"ab", memoryview(array.array("i", [1, 2]))],  # lengths that are not byte counts
        [],
        [b""],
    ],
    ids=["bytes", "with-a-null", "wide-items", "no-records", "one-empty-value"],
)
def test_a_poll_s_values_become_the_same_arrow_array_as_pa_array_makes(values):
    built = _binary_array(values)
    assert built.equals(pa.array(values, pa.binary()))
    assert built.to_pylist() == [bytes(v) if v is not None else None for v in values]
