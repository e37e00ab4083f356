"""The analyst snapshot's ``events``: a view over Parquet parts kept in a folder beside
the snapshot file (``<snapshot name>.events/part-000001/data_0.parquet``, ...).

Why not a table inside the snapshot file like the others: events are most of the
data, and copying 10M of them into a DuckDB file spends ~47 s (2 cores) compressing
strings, where writing them as zstd Parquet, one file per thread, takes ~23 s and a
third of the space. And events are only ever added (``cdp forget`` aside), so a
part, once written, stays valid: each later publish writes only the events received
since the previous one as a new part, and the snapshot's view names every part it is
made of. Pandas, polars or Spark can read the parts directly.

Parts are never modified. When there are more than ``PART_LIMIT``, the newest half
are merged into one (so each event is rewritten a logarithmic number of times). A
part no longer named by the new snapshot is deleted once the snapshot before it —
which a reader may still have open — is replaced too; except after a full rewrite
(events were deleted by ``cdp forget``, or the schema changed), when the old parts
go at once: a forgotten customer's events must not outlive the publish. A reader
holding an older snapshot than that gets an error naming the missing file, and
reconnects.

A publish killed before its snapshot replaced the previous one leaves the parts it
wrote, which no snapshot names; one killed just after, the parts it would have
deleted. :func:`remove_unnamed_parts` deletes both kinds when the next publish or
build starts.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb

from cdp.storage.sql import sql_string

PART_LIMIT = 16

# Row groups of half DuckDB's default size: the writer's per-column dictionaries stay
# small, and 10M events took ~15% less time to write (files the same size).
_COPY_OPTIONS = (
    "FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL 1, PER_THREAD_OUTPUT true, "
    "ROW_GROUP_SIZE 61440"
)

# Events the previous snapshot may lack: every one stamped at or after the moment
# up to which it was complete, unless its parts already hold it. A row is its id and
# when it was stored: a late copy of an event (see cdp.storage.event_store) shares
# the id, never the moment.
_SINCE = """
SELECT e.* FROM main.events AS e
ANTI JOIN (SELECT event_id, received_at FROM read_parquet($files) WHERE received_at >= $since)
    USING (event_id, received_at)
WHERE e.received_at >= $since
"""


@dataclass(frozen=True)
class EventParts:
    files: tuple[str, ...]  # relative to the folder: "part-000003/data_0.parquet"
    incremental: bool  # the previous snapshot's parts were kept and added to
    retire_previous: bool  # the previous snapshot's parts must not outlive this publish


def write_event_parts(
    con: duckdb.DuckDBPyConnection,
    folder: Path,
    previous: tuple[str, ...] | None,
    since: datetime | None,
) -> EventParts:
    """Write the parts the new snapshot needs, inside the caller's transaction on the
    live database (so they hold exactly what it sees). ``previous`` names the parts of
    the previous snapshot and ``since`` the moment every event stamped before it was in
    them; without them, or when the counts disagree afterwards, every event is written."""
    folder.mkdir(parents=True, exist_ok=True)
    live = con.execute("SELECT count(*) FROM main.events").fetchall()[0][0]
    if previous and since is not None and all((folder / f).exists() for f in previous):
        paths = [str(folder / f) for f in previous]
        held = con.execute("SELECT count(*) FROM read_parquet($f)", {"f": paths}).fetchall()
        added, part, new = _write_part(con, folder, _SINCE, {"since": since, "files": paths})
        if held[0][0] + added == live:
            if not added:  # nothing new: no part for it
                shutil.rmtree(part)
                new = ()
            return EventParts(_merge_newest(con, folder, previous + new), True, False)
        shutil.rmtree(part)
    _, _, files = _write_part(con, folder, "SELECT * FROM main.events", {})
    return EventParts(files, False, True)


def events_view(folder: Path, files: Iterable[str]) -> str:
    """The view's definition. Paths are absolute: analysts open the snapshot from
    anywhere, and DuckDB resolves a relative path against their working directory."""
    listed = ", ".join(sql_string(str((folder / f).resolve())) for f in files)
    return f"CREATE VIEW analyst_snapshot.events AS SELECT * FROM read_parquet([{listed}])"


def parts_bytes(folder: Path) -> int:
    """What the parts in ``folder`` take on disk."""
    return sum(f.stat().st_size for f in folder.rglob("*.parquet"))


def part_names(folder: Path) -> tuple[str, ...]:
    """The parts in ``folder`` now, named as :func:`retire_parts` takes them."""
    return tuple(p.name for p in _part_dirs(folder))


def retire_parts(folder: Path, keep: Iterable[str]) -> None:
    """Delete every part in ``folder`` but those named in ``keep`` (parts, or files in them)."""
    kept = {_part_of(f) for f in keep}
    for part in _part_dirs(folder):
        if part.name not in kept:
            shutil.rmtree(part, ignore_errors=True)


def remove_unnamed_parts(folder: Path, named: Iterable[str], keep_older: bool) -> list[Path]:
    """Delete the parts in ``folder`` that ``named`` (the parts of the snapshot in
    place) leaves out, and return them. With ``keep_older`` — the snapshot added to its
    predecessor's parts, which a reader may still hold — only those numbered above its
    own parts: every publish numbers its parts after all there are, so those were
    written by a publish that did not finish."""
    kept = {_part_of(f) for f in named}
    newest = max((_number(p) for p in kept), default=0)
    removed = []
    for part in sorted(_part_dirs(folder)):
        if part.name not in kept and (not keep_older or _number(part.name) > newest):
            shutil.rmtree(part, ignore_errors=True)
            removed.append(part)
    return removed


def _number(part: str) -> int:
    return int(part.removeprefix("part-"))


def _write_part(
    con: duckdb.DuckDBPyConnection, folder: Path, query: str, params: dict[str, object]
) -> tuple[int, Path, tuple[str, ...]]:
    """COPY ``query`` into a new part; (rows, the part, its files). A query without
    rows still leaves one file, which carries the schema."""
    numbers = [_number(p.name) for p in _part_dirs(folder)]
    part = folder / f"part-{max(numbers, default=0) + 1:06d}"
    rows = con.execute(
        f"COPY ({query}) TO {sql_string(str(part))} ({_COPY_OPTIONS})", params
    ).fetchall()[0][0]
    return int(rows), part, tuple(f"{part.name}/{f.name}" for f in sorted(part.iterdir()))


def _merge_newest(
    con: duckdb.DuckDBPyConnection, folder: Path, files: tuple[str, ...]
) -> tuple[str, ...]:
    parts = list(dict.fromkeys(_part_of(f) for f in files))
    if len(parts) <= PART_LIMIT:
        return files
    newest = set(parts[-(PART_LIMIT // 2) :])
    older = tuple(f for f in files if _part_of(f) not in newest)
    merged = [str(folder / f) for f in files if _part_of(f) in newest]
    _, _, written = _write_part(
        con, folder, "SELECT * FROM read_parquet($files)", {"files": merged}
    )
    return older + written


def _part_of(name: str) -> str:
    """The part a file belongs to ("part-000003/data_0.parquet" → "part-000003"), or
    the part's own name."""
    return name.split("/")[0]


def _part_dirs(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return [
        p
        for p in folder.iterdir()
        if p.is_dir() and p.name.startswith("part-") and p.name[5:].isdigit()
    ]
