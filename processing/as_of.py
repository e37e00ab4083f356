"""Day boundaries: what ``--as-of DATE`` means, for builds and exports alike.

A build or an export is as of one moment. Given a date, that moment is the last
microsecond of the day in UTC, so the whole day counts; given nothing, a build is
as of now and an export as of the latest build.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta


def end_of_day(day: date) -> datetime:
    """The last moment of ``day`` (UTC): ``--as-of DATE`` includes that whole day."""
    return datetime.combine(day + timedelta(days=1), time.min, tzinfo=UTC) - timedelta(
        microseconds=1
    )
