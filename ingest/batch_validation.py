"""Validating a whole batch of lines at once: DuckDB proves the common ones, pydantic
judges the rest.

pydantic (``cdp.ingest.events``, through :func:`cdp.ingest.validation.validate_messages`)
stays the definition of a valid event. The fast path, one SQL statement over the
batch (``batch_validation.sql``), only *accepts*: a line comes out of it when DuckDB
can prove that pydantic would accept it and make the same event row of it (event id,
canonical type, family, time, user and anonymous ids; the payload is the line as it
is). It is conservative by design: anything unusual (an escape, a null, whitespace
between tokens, an exponent, an alias given twice, a type name needing normalisation,
a value of another type than the common one, a time out of bounds, a line over the
size limit...) is left to pydantic, which gives the verdict and the reason, exactly
as if the fast path did not exist. tests/ingest/test_batch_validation.py holds the
two paths to the same rows and the same dead letters over every kind of bad input the
project knows and a seeded fuzz of mutated events.

On the events ``cdp generate`` writes, 99.6% take the fast path (the rest are the
generator's malformed lines, its odd e-mail addresses and the like). It costs ~6.2
us of CPU per line on one thread (DuckDB spreads it over the cores), against ~7 us in
pydantic on one core: what it buys is the parallelism (pydantic holds the GIL; the
loader ran it in a validator process) and no process to spawn (issue 17).

A batch's lines may come as a chunked array (``cdp load`` hands over the blocks it
read, uncopied); everything taken from them is taken chunk by chunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import repeat

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cdp.ingest.events import _TYPE_LOOKUP, FAMILY_OF_TYPE
from cdp.ingest.validation import (
    DEAD_LETTER_SCHEMA,
    DEFAULT_LIMITS,
    EVENT_SCHEMA,
    ValidatedBatch,
    ValidationLimits,
    validate_messages,
)
from cdp.storage.database import execute_script
from cdp.storage.sql import read_sql, sql_string

# For each distinct string of key lists (the objects' lists, NULL where a line has no
# such object): how many keys they hold, or -1 if a list is empty (an empty object, or
# a value that is no object) or repeats a key. In the order of `distinct_keys`.
_KEY_TOTALS = """
SELECT CASE WHEN list_bool_and(list_transform(lists,
                 lambda k: k IS NULL OR (len(k) > 0 AND len(list_distinct(k)) = len(k))))
            THEN coalesce(list_sum(list_transform(lists, lambda k: coalesce(len(k), 0))), 0)
            ELSE -1 END AS total
FROM (SELECT position, CAST(keys AS VARCHAR[][]) AS lists FROM distinct_keys)
ORDER BY position
"""

# The event columns the fast path and pydantic each give; the rest come from the lines.
_ENVELOPE = ["event_id", "type", "family", "occurred_at", "user_id", "anonymous_id"]
INPUT_SCHEMA = pa.schema([("row_index", pa.int64()), ("raw", pa.binary())])
SCAN_ROWS = 16_384


class BatchValidator:
    """Validates batches of lines from one source (a file: every family accepted) in
    an in-memory DuckDB connection of its own; close it when done."""

    def __init__(self, limits: ValidationLimits = DEFAULT_LIMITS) -> None:
        self.limits = limits
        self._con = duckdb.connect(":memory:")
        self._con.execute("SET enable_progress_bar = false")
        execute_script(self._con, read_sql("cdp.ingest", "batch_validation_macros.sql"))
        # Names exactly as pydantic's lookup has them, as the JSON text of a string;
        # a name that needs stripping or lower-casing is left to pydantic.
        self._con.execute(
            _case_macro("canonical_type", {f'"{n}"': t for n, t in _TYPE_LOOKUP.items()})
        )
        self._con.execute(_case_macro("family_of", {t: f.value for t, f in FAMILY_OF_TYPE.items()}))
        self._sql = read_sql("cdp.ingest", "batch_validation.sql")
        self.fast = 0  # lines accepted by the fast path, over the validator's life
        self.slow = 0  # lines left to pydantic

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> BatchValidator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def validate(
        self,
        source: str,
        offsets: Sequence[int] | pa.Array | pa.ChunkedArray,
        values: Sequence[bytes] | pa.Array | pa.ChunkedArray,
    ) -> ValidatedBatch:
        """Validate ``values`` (non-empty lines, as bytes) from ``source`` (partition 0,
        each at its offset, e.g. its line number): the same result as
        ``validate_batch`` of them, events in the order of their lines (the loader's
        offsets, line numbers, ascend with them)."""
        raw = _chunked(values, pa.binary())
        offsets = _chunked(offsets, pa.int64())
        count = len(raw)
        checked = self._check(raw)
        # Without `keys` (~250 bytes a line), which the filter would copy for nothing.
        fast = checked.select(["row_index", *_ENVELOPE]).filter(self._no_repeated_key(checked))
        rows = fast.column("row_index").to_numpy()
        envelope = fast.select(_ENVELOPE).cast(
            pa.schema([EVENT_SCHEMA.field(n) for n in _ENVELOPE])
        )
        self.fast += len(rows)
        left = np.ones(count, dtype=bool)
        left[rows] = False
        rest = np.flatnonzero(left)
        self.slow += len(rest)
        dead_letters, dead_letter_kinds = _no_dead_letters(), {}
        if len(rest):
            judged = validate_messages(
                zip(
                    _take_sorted(raw, rest).to_pylist(),
                    repeat(source),
                    repeat(0),
                    _take_sorted(offsets, rest).to_pylist(),
                    repeat(None),
                    strict=False,
                ),
                None,
                self.limits,
                with_payload=False,
            )
            dead_letters, dead_letter_kinds = judged.dead_letters, judged.dead_letter_kinds
            if judged.events.num_rows:
                judged_rows = rest[judged.events.column("message_index").to_numpy()]
                rows = np.concatenate([rows, judged_rows])
                envelope = pa.concat_tables([envelope, judged.events.select(_ENVELOPE)])
        # Every event's payload is its line: taken once, in line order, for both paths.
        order = np.argsort(rows, kind="stable")
        rows = rows[order]
        events = pa.Table.from_arrays(
            [
                *envelope.take(order).columns,
                pa.repeat(pa.scalar(source, pa.string()), len(rows)),
                pa.repeat(pa.scalar(0, pa.int32()), len(rows)),
                _take_sorted(offsets, rows),
                _take_sorted(raw, rows).cast(pa.string()),
            ],
            schema=EVENT_SCHEMA,
        )
        return ValidatedBatch(
            # In record batches, as for the check: DuckDB inserts one per thread.
            events=pa.Table.from_batches(
                events.to_batches(max_chunksize=SCAN_ROWS), schema=EVENT_SCHEMA
            ),
            dead_letters=dead_letters,
            consumed=count,
            dead_letter_kinds=dead_letter_kinds,
        )

    def _no_repeated_key(self, checked: pa.Table) -> pa.Array:
        """Per row of the fast path's result, whether its objects hold no key twice and
        all the keys of the text (``keys`` against ``key_count``, see the .sql file).
        ``keys`` repeat from line to line (~200 distinct in a batch of the generated
        store, but a property named after each event makes every one distinct), so
        each distinct one is read back into lists by DuckDB, which wrote it, and
        counted there: per distinct string, in C, with no Python object per key."""
        keys = checked.column("keys")
        distinct = pc.unique(keys).drop_null()
        self._con.register(
            "distinct_keys", pa.table({"keys": distinct, "position": np.arange(len(distinct))})
        )
        try:
            totals = self._con.sql(_KEY_TOTALS).fetchnumpy()["total"]
        finally:
            self._con.unregister("distinct_keys")
        # The number of keys of each distinct string, then -1 for a line without one.
        totals = np.append(totals.astype(np.int64), -1)
        found = totals[pc.index_in(keys, value_set=distinct).fill_null(-1).to_numpy()]
        return pa.array(found == checked.column("key_count").to_numpy())

    def _check(self, raw: pa.ChunkedArray) -> pa.Table:
        received = datetime.now(UTC)
        try:
            latest = received + self.limits.max_future_skew
        except OverflowError:  # a skew of millennia: no event is too far ahead
            latest = datetime.max.replace(tzinfo=UTC)
        # In record batches of SCAN_ROWS: DuckDB scans Arrow in parallel batch by batch
        # (one batch of the whole table would keep it on one thread).
        incoming = pa.Table.from_arrays(
            [pa.chunked_array([np.arange(len(raw), dtype=np.int64)]), raw],
            schema=INPUT_SCHEMA,
        )
        incoming = pa.Table.from_batches(incoming.to_batches(max_chunksize=SCAN_ROWS))
        self._con.register("incoming_lines", incoming)
        try:
            return self._con.sql(
                self._sql,
                params={
                    "max_event_bytes": self.limits.max_event_bytes,
                    "earliest": self.limits.earliest_event_time,
                    "latest": latest,
                },
            ).to_arrow_table()
        finally:
            self._con.unregister("incoming_lines")


def _take_sorted(values: pa.ChunkedArray, rows: np.ndarray) -> pa.ChunkedArray:
    """``values`` at ``rows`` (ascending), taken chunk by chunk: a take over a chunked
    array joins all its chunks into one copy first (~64 MB for a batch of lines)."""
    bounds = np.cumsum([0, *(len(chunk) for chunk in values.chunks)])
    cuts = np.searchsorted(rows, bounds)  # rows[cuts[i]:cuts[i + 1]] are in chunk i
    return pa.chunked_array(
        [
            pc.take(chunk, rows[cuts[i] : cuts[i + 1]] - bounds[i])
            for i, chunk in enumerate(values.chunks)
        ],
        values.type,
    )


def _chunked(values: Sequence | pa.Array | pa.ChunkedArray, type_: pa.DataType) -> pa.ChunkedArray:
    if isinstance(values, pa.ChunkedArray):
        return values
    return pa.chunked_array([values if isinstance(values, pa.Array) else pa.array(values, type_)])


def _case_macro(name: str, values: dict[str, str]) -> str:
    """A macro mapping each key of ``values`` to its value (NULL for any other)."""
    cases = " ".join(f"WHEN {sql_string(k)} THEN {sql_string(v)}" for k, v in values.items())
    return f"CREATE MACRO {name}(v) AS CASE v {cases} END"


def _no_dead_letters() -> pa.Table:
    return DEAD_LETTER_SCHEMA.empty_table()
