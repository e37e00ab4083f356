"""``cdp export`` and the nightly export: each segment to each of its destinations, as
a full snapshot and the diff since the destination's last confirmed state.

Membership comes from ``segment_membership_history`` as it stood at the export's
as-of (the latest build by default; ``--as-of DATE`` means the end of that day), so
an export can be re-run for a past date. A customer is exported only when their
latest stated consent grants the channel the segment (or the destination) names.

Per destination and segment, ``export_state`` holds what the destination has
confirmed it holds; ``entered`` = consented members not in it, ``exited`` = rows in
it that are no longer consented members. The state advances only from the
destination's confirmations (per batch for webhooks), in a transaction, so a
destination that fails keeps its diff for the next run and one failing destination
never blocks the others. Re-running an export for an as-of a destination already
took is skipped, so nothing is sent twice and files stay as they were written.

A process killed mid-export leaves its ``export_runs`` rows ``running`` and, for file
destinations, hidden staging folders of member files. Only one process can hold the
database for writing, and ``cdp run`` exports after its build under the build lock,
so a ``running`` row an export finds when it starts is a dead process's: each export
begins with :func:`clean_up_interrupted_exports`, which marks those rows
``interrupted`` and deletes those folders. What a killed run had confirmed stays in
``export_state``; the rest is in the next diff.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from cdp.errors import CdpError, ExportError
from cdp.processing.activation.destinations import Delivery, deliver, remove_staging_leftovers
from cdp.processing.as_of import end_of_day
from cdp.processing.segmentation.config import Segment, SegmentConfig
from cdp.processing.stages.run import LIVE_BUILD_STATUSES
from cdp.settings import Settings
from cdp.storage.database import execute_script
from cdp.storage.transactions import transaction

log = logging.getLogger(__name__)

_MEMBERS = """
CREATE OR REPLACE TEMP MACRO cdp_e164(phone, country_code) AS
    CASE WHEN phone IS NULL THEN NULL
         WHEN starts_with(phone, '+') THEN phone
         WHEN starts_with(phone, '00') THEN '+' || phone[3:]
         WHEN country_code <> '' THEN '+' || country_code || ltrim(phone, '0')
    END;

CREATE OR REPLACE TEMP TABLE export_members AS
SELECT h.segment, h.customer_id, p.user_id, p.emails[1] AS email, p.phones[1] AS phone,
       m.traits::VARCHAR AS traits
FROM segment_membership_history h
JOIN customer_profiles p USING (customer_id)
LEFT JOIN segment_membership m USING (segment, customer_id)
WHERE h.entered_at <= $as_of AND (h.exited_at IS NULL OR h.exited_at > $as_of)
  AND ($only_customers IS NULL OR list_contains($only_customers, h.customer_id));
"""

# Emails are stored trimmed and lower-cased (identity resolution), as the ad
# platforms require before hashing.
_CONSENTED = """
SELECT m.customer_id, m.user_id, m.email, m.phone,
       sha256(m.email) AS email_sha256,
       sha256(cdp_e164(m.phone, $country_code)) AS phone_sha256,
       m.traits
FROM export_members m
WHERE m.segment = $segment
  AND ($channel = 'none' OR EXISTS (
      SELECT 1 FROM customer_consent c
      WHERE c.customer_id = m.customer_id AND c.channel = $channel AND c.granted))
ORDER BY m.customer_id
"""

_EXITED = """
SELECT s.customer_id, s.email_sha256, s.phone_sha256
FROM export_state s
WHERE s.destination = $destination AND s.segment = $segment
  AND ($only_customers IS NULL OR list_contains($only_customers, s.customer_id))
  AND s.customer_id NOT IN (SELECT customer_id FROM export_current)
ORDER BY s.customer_id
"""

_CONFIRM = """
INSERT OR REPLACE INTO export_state
SELECT $destination, $segment, e.customer_id, e.email_sha256, e.phone_sha256, $now
FROM confirmed_entered_rows e JOIN confirmed_entered USING (customer_id);

DELETE FROM export_state
WHERE destination = $destination AND segment = $segment
  AND customer_id IN (SELECT customer_id FROM confirmed_exited);
"""


_INTERRUPTED = (
    "interrupted: its process ended during the export (finished_at is when a later "
    "start noticed); what the destination confirmed is kept, the rest is in the next diff"
)


@dataclass(frozen=True)
class ExportResult:
    destination: str
    segment: str
    status: str  # succeeded | failed | skipped
    members: int = 0
    entered: int = 0
    exited: int = 0
    location: str = ""
    message: str = ""


@dataclass(frozen=True)
class ExportReport:
    as_of: date
    results: list[ExportResult]

    @property
    def failed(self) -> list[ExportResult]:
        return [result for result in self.results if result.status == "failed"]


def run_export(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    config: SegmentConfig,
    *,
    as_of: date | None = None,
    out_dir: Path | None = None,
    destinations: Iterable[str] | None = None,
    only_customers: list[str] | None = None,
    destination_types: Iterable[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ExportReport:
    """Export every configured segment to its destinations (or only ``destinations``).

    ``only_customers`` restricts the diff to those customers and does not skip
    as-ofs already exported (used by ``cdp forget`` to send exits at once)."""
    out_dir = out_dir or settings.export.out_dir
    clean_up_interrupted_exports(con, settings, config, out_dir)
    moment = _export_moment(con, as_of)
    day = moment.date() if as_of is None else as_of
    wanted = set(destinations) if destinations is not None else None
    if wanted is not None and (unknown := wanted - set(config.destinations)):
        raise ExportError(
            f"unknown destination(s) {', '.join(sorted(unknown))} "
            f"(configured: {', '.join(sorted(config.destinations)) or 'none'})"
        )
    types = set(destination_types) if destination_types is not None else None
    execute_script(con, _MEMBERS, {"as_of": moment, "only_customers": only_customers})
    pairs = [
        (segment, name)
        for segment in config.segments
        for name in segment.definition.destinations
        if (wanted is None or name in wanted)
        and (types is None or config.destinations[name].type in types)
    ]
    results = []
    for segment, name in pairs:
        results.append(
            _export_one(con, settings, config, segment, name, day, out_dir, only_customers)
        )
        if progress:
            progress(len(results), len(pairs))
    return ExportReport(day, results)


def clean_up_interrupted_exports(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    config: SegmentConfig,
    out_dir: Path | None = None,
) -> tuple[int, list[Path]]:
    """Mark the export runs a killed process left ``running`` as ``interrupted`` and
    delete the staging folders its file deliveries left (they hold member files);
    return how many runs, and which folders.

    Every export starts with it; the service can call it once when it starts. It
    must run only in the process that holds the database for writing, and never
    while an export of that process is under way."""
    runs = con.execute(
        "UPDATE export_runs SET status = 'interrupted', finished_at = $now, message = $message "
        "WHERE status = 'running' RETURNING export_run_id, destination, segment",
        {"now": datetime.now(UTC), "message": _INTERRUPTED},
    ).fetchall()
    for run_id, destination, segment in runs:
        log.warning(
            "export run %d (%s to %s) was interrupted: its process ended",
            run_id,
            segment,
            destination,
        )
    removed = remove_staging_leftovers(
        config.destinations.values(), out_dir or settings.export.out_dir
    )
    for folder in removed:
        log.warning("removed %s, left by an interrupted export", folder)
    return len(runs), removed


def _export_moment(con: duckdb.DuckDBPyConnection, as_of: date | None) -> datetime:
    rows = con.execute(
        "SELECT max(as_of) FROM builds WHERE list_contains($live, status)",
        {"live": list(LIVE_BUILD_STATUSES)},
    ).fetchall()
    latest = rows[0][0]
    if latest is None:
        raise ExportError("nothing to export yet: no build has succeeded (run `cdp build`)")
    return latest if as_of is None else end_of_day(as_of)


def _export_one(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    config: SegmentConfig,
    segment: Segment,
    name: str,
    day: date,
    out_dir: Path,
    only_customers: list[str] | None,
) -> ExportResult:
    destination = config.destinations[name]
    if only_customers is None and (reason := _already_exported(con, name, segment.name, day)):
        return ExportResult(name, segment.name, "skipped", message=reason)
    run_id = con.execute(
        "INSERT INTO export_runs (destination, segment, as_of, started_at, status, scope) "
        "VALUES ($d, $s, $day, $now, 'running', $scope) RETURNING export_run_id",
        {
            "d": name,
            "s": segment.name,
            "day": day,
            "now": datetime.now(UTC),
            "scope": "all" if only_customers is None else "forget",
        },
    ).fetchall()[0][0]
    params = {
        "segment": segment.name,
        "channel": config.consent_channel(segment, name),
        "country_code": getattr(destination, "default_country_code", ""),
    }
    # Already limited to only_customers: _MEMBERS applied it when staging the members.
    current = con.sql(_CONSENTED, params=params).to_arrow_table()
    con.register("export_current", current)
    try:
        exited = con.sql(
            _EXITED,
            params={"destination": name, "segment": segment.name, "only_customers": only_customers},
        ).to_arrow_table()
        known = con.sql(
            "SELECT customer_id FROM export_state WHERE destination = $d AND segment = $s",
            params={"d": name, "s": segment.name},
        ).to_arrow_table()
    finally:
        con.unregister("export_current")
    entered = current.filter(pc.invert(pc.is_in(current["customer_id"], known["customer_id"])))
    delivery = Delivery(
        name, segment.name, day, run_id, current, entered, exited, segment.definition.traits
    )
    counts = {"members": current.num_rows, "entered": entered.num_rows, "exited": exited.num_rows}
    try:
        location = deliver(
            con,
            settings,
            destination,
            delivery,
            lambda e, x: _confirm(con, name, segment.name, entered, e, x),
            out_dir,
        )
    except CdpError as exc:
        # A destination that failed (DeliveryError; DiskError for a full disk;
        # TransientError for a broker not reachable): this delivery fails and keeps
        # its diff, the others go on. Anything else is a bug, and propagates.
        message = f"{type(exc).__name__}: {exc}"
        log.warning("export of %s to %s failed: %s", segment.name, name, message)
        _finish(con, run_id, "failed", counts, None, message)
        return ExportResult(name, segment.name, "failed", **counts, message=message)
    _finish(con, run_id, "succeeded", counts, location, None)
    return ExportResult(name, segment.name, "succeeded", **counts, location=location)


def _already_exported(
    con: duckdb.DuckDBPyConnection, destination: str, segment: str, day: date
) -> str | None:
    rows = con.execute(
        "SELECT max(as_of), max(export_run_id) FILTER (WHERE as_of = $day) FROM export_runs "
        "WHERE destination = $d AND segment = $s AND status = 'succeeded' AND scope = 'all'",
        {"d": destination, "s": segment, "day": day},
    ).fetchall()
    latest, same_day_run = rows[0]
    if same_day_run is not None:
        return f"already exported for {day} (export run {same_day_run})"
    if latest is not None and latest > day:
        return f"a later as-of ({latest}) was already exported; the diff cannot go backwards"
    return None


def _confirm(
    con: duckdb.DuckDBPyConnection,
    destination: str,
    segment: str,
    entered_rows: pa.Table,
    entered: list[str],
    exited: list[str],
) -> None:
    """Advance the destination's state by what it confirmed, in one transaction."""
    if not entered and not exited:
        return
    con.register("confirmed_entered_rows", entered_rows)
    con.register("confirmed_entered", pa.table({"customer_id": pa.array(entered, pa.string())}))
    con.register("confirmed_exited", pa.table({"customer_id": pa.array(exited, pa.string())}))
    try:
        with transaction(con):
            execute_script(
                con,
                _CONFIRM,
                {"destination": destination, "segment": segment, "now": datetime.now(UTC)},
            )
    finally:
        for view in ("confirmed_entered_rows", "confirmed_entered", "confirmed_exited"):
            con.unregister(view)


def _finish(
    con: duckdb.DuckDBPyConnection,
    run_id: int,
    status: str,
    counts: dict[str, int],
    location: str | None,
    message: str | None,
) -> None:
    con.execute(
        "UPDATE export_runs SET finished_at = $now, status = $status, members = $members, "
        "entered = $entered, exited = $exited, location = $location, message = $message "
        "WHERE export_run_id = $id",
        {
            "now": datetime.now(UTC),
            "status": status,
            **counts,
            "location": location,
            "message": message,
            "id": run_id,
        },
    )
