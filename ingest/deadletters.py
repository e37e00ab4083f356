"""Dead letters: what could not be ingested, why, and replaying them after a fix.

A replay re-validates each dead letter's raw bytes with the current code and
configuration (say, after adding a Segment event name or fixing a producer's topic
mapping). Those that pass move to ``events`` (keeping their original source
coordinates, so the offset accounting still holds) and leave ``dead_letters``;
those that still fail stay, with the new reason and a replay count.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from cdp.ingest.events import Family
from cdp.ingest.validation import RawMessage, ValidationLimits, validate_batch
from cdp.settings import Settings
from cdp.storage.event_store import resolve_replayed


@dataclass(frozen=True)
class DeadLetterRow:
    dead_letter_id: int
    source: str
    error_kind: str
    reason: str
    raw_preview: str
    replay_attempts: int


@dataclass(frozen=True)
class ReplayReport:
    examined: int
    moved_to_events: int
    already_stored: int
    still_failing: int


def list_dead_letters(
    con: duckdb.DuckDBPyConnection, *, limit: int = 50, kind: str | None = None
) -> tuple[list[DeadLetterRow], int]:
    """The newest dead letters (optionally of one kind) and the total count."""
    where = "WHERE error_kind = $kind" if kind else ""
    params = {"kind": kind} if kind else {}
    total = con.execute(f"SELECT count(*) FROM dead_letters {where}", params).fetchall()[0][0]
    rows = con.execute(
        f"""SELECT dead_letter_id, source_topic, source_partition, source_offset, error_kind,
                   reason, raw, replay_attempts
            FROM dead_letters {where}
            ORDER BY dead_letter_id DESC LIMIT $limit""",
        {**params, "limit": limit},
    ).fetchall()
    listed = [
        DeadLetterRow(
            dead_letter_id=row[0],
            source=_source(row[1], row[2], row[3]),
            error_kind=row[4],
            reason=row[5],
            raw_preview=_preview(row[6]),
            replay_attempts=row[7],
        )
        for row in rows
    ]
    return listed, int(total)


def replay_dead_letters(
    con: duckdb.DuckDBPyConnection, settings: Settings, *, kind: str | None = None
) -> ReplayReport:
    where = "WHERE error_kind = $kind" if kind else ""
    rows = con.execute(
        f"""SELECT raw, source_topic, source_partition, source_offset, message_key
            FROM dead_letters {where} ORDER BY dead_letter_id""",
        {"kind": kind} if kind else {},
    ).fetchall()
    messages = [RawMessage(raw, topic, part, offset, key) for raw, topic, part, offset, key in rows]
    family_by_topic = {
        topic: Family(family) for family, topic in settings.topics.by_family().items()
    }
    limits = ValidationLimits.from_settings(settings.ingest)
    validated = validate_batch(messages, family_by_topic, limits)
    stored, _duplicates = resolve_replayed(
        con,
        validated.events,
        validated.dead_letters,
        duplicate_window=settings.ingest.duplicate_window,
    )
    return ReplayReport(
        examined=len(messages),
        moved_to_events=stored,
        already_stored=validated.events.num_rows - stored,
        still_failing=validated.dead_letters.num_rows,
    )


def _source(topic: str, partition: int, offset: int) -> str:
    if topic.startswith("file:"):
        return f"{topic} line {offset}"
    return f"{topic}[{partition}]@{offset}"


def _preview(raw: bytes, width: int = 60) -> str:
    text = raw.decode("utf-8", errors="backslashreplace")
    return text if len(text) <= width else text[: width - 3] + "..."
