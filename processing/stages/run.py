"""A build: identities → profiles → KPIs and formula CLVs → RFM → predictive CLV →
segments.

A build is point-in-time: it uses only events at or before ``as_of`` (by default
now; ``cdp build --as-of DATE`` means the end of that day, UTC), so history can be
backfilled. The stages compute into temp tables; everything the build writes to
shared tables — identities, aliases, profiles, orders, history, KPIs, model runs —
happens in one short publish transaction: readers see the previous build until the
new one is complete, and a failed build leaves no trace but its row in ``builds``.
Re-running an as-of date replaces its dated rows. ``customer_profiles``, ``orders``
and ``customer_rolling_windows`` always hold the build with the latest as-of; a backfill
of an earlier date writes only the dated history tables.

``builds.status`` says how far a build got. ``running`` while it computes; then, in
the publish transaction itself, ``succeeded`` — or ``publishing`` when the analyst
database and report are still to be written (:mod:`cdp.processing.jobs.pipeline`), which
ends ``succeeded`` or ``publish_failed``. ``failed`` means nothing of it was written.
A process killed mid-build leaves ``running`` or ``publishing`` behind; only one
process can hold the database for writing and ``cdp run`` builds one at a time, so
such a row found before a build starts is a dead process's, and
:func:`mark_interrupted_builds` marks it (every build and the service's start run it,
through :func:`cdp.processing.jobs.pipeline.clean_up_interrupted_builds`): ``running``
becomes ``interrupted`` (nothing written), ``publishing`` becomes ``publish_failed``
(its tables are live, its analyst copy or its report is not) — or ``succeeded`` when
both were written and only recording it did not happen. The builds whose
tables the live database holds are those in ``LIVE_BUILD_STATUSES``: the latest of
them is "the latest build" for later builds and for exports.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb

from cdp.processing.models.clv_models import COUNT_MODELS
from cdp.processing.segmentation.config import SegmentConfig, load_segment_config
from cdp.processing.stages.clv import (
    FORMULA_CLV_COLUMNS,
    PREDICTED_CLV_COLUMNS,
    ModelRuns,
    compute_store_kpis,
    predict_clv,
)
from cdp.processing.stages.clv_backtest import (
    BUILD_PURCHASES,
    Backtest,
    publish_backtest,
    run_backtest,
)
from cdp.processing.stages.identity import IdentityReport, apply_identities, resolve_identities
from cdp.processing.stages.payloads import parse_order_payloads
from cdp.processing.stages.profiles import (
    build_profiles,
    profile_column_names,
    set_profile_columns,
    unconverted_orders,
)
from cdp.processing.stages.rfm import RFM_COLUMNS, score_rfm
from cdp.processing.stages.segment_source import segment_source_columns, stage_segment_inputs
from cdp.processing.stages.segments import compute_segments, publish_segments
from cdp.settings import Settings
from cdp.storage.database import execute_script
from cdp.storage.event_store import count_each_event_once
from cdp.storage.transactions import transaction

log = logging.getLogger(__name__)

# Statuses of builds whose tables were written to the live database.
LIVE_BUILD_STATUSES = ("succeeded", "publishing", "publish_failed")

# How builds.message ends when the analyst database was not published, or it was and
# the report was not.
_NOT_PUBLISHED = "analyst database not published: "
_REPORT_NOT_WRITTEN = "analyst database published, report not written: "

# (The CASEs read each row's status as it was before this UPDATE.)
_MARK_INTERRUPTED = """
UPDATE builds
SET status = CASE
        WHEN status = 'running' THEN 'interrupted'
        WHEN list_contains($report_written, build_id) THEN 'succeeded'
        ELSE 'publish_failed'
    END,
    finished_at = $now,
    message = CASE
        WHEN status = 'running' THEN $interrupted
        WHEN list_contains($report_written, build_id) THEN concat_ws('; ', message, $recorded)
        WHEN list_contains($analyst_published, build_id)
            THEN concat_ws('; ', message, $report_not_written)
        ELSE concat_ws('; ', message, $not_published)
    END
WHERE status IN ('running', 'publishing')
RETURNING build_id, status
"""

_PUBLISH_HISTORY = """
DELETE FROM profile_history WHERE as_of = $as_of_date;

INSERT INTO profile_history
SELECT $as_of_date, customer_id, orders, net_revenue, historic_clv, predicted_clv, p_alive,
       rfm_segment, journey_stage, loyalty_tier
FROM build_profiles;

INSERT OR REPLACE INTO store_kpis BY NAME SELECT * FROM build_kpis;

INSERT OR REPLACE INTO rfm_segment_summary
SELECT $as_of_date, rfm_segment, count(*), sum(net_revenue), avg(historic_clv),
       avg(basic_clv), avg(predicted_clv)
FROM build_profiles WHERE rfm_segment IS NOT NULL GROUP BY rfm_segment;
"""

_PUBLISH_CURRENT = """
DELETE FROM customer_profiles;

-- build_profiles also holds the segment source's columns: only the profile's own.
INSERT INTO customer_profiles BY NAME
SELECT COLUMNS(lambda c: list_contains($columns, c)) FROM build_profiles;

DELETE FROM customer_rolling_windows;

INSERT INTO customer_rolling_windows SELECT * FROM build_rolling_windows;

DELETE FROM orders;

INSERT INTO orders BY NAME
SELECT order_id, customer_id, ordered_at, gross, refunded, cancelled, units, product_ids,
       categories
FROM order_facts;
"""


# The stages ``run_build`` tells its ``progress`` about, in order (a test holds the
# build to this list; ``cdp build``'s progress bar counts it).
BUILD_STAGES = ("identities", "profiles", "KPIs and RFM", "predictive CLV", "segments", "publish")


@dataclass(frozen=True)
class BuildReport:
    build_id: int
    as_of: datetime
    customers: int
    identity: IdentityReport
    models: ModelRuns
    backtest: Backtest
    unconverted_orders: int
    published_current: bool
    memberships: int
    seconds: float


def mark_interrupted_builds(
    con: duckdb.DuckDBPyConnection,
    *,
    analyst_published: Collection[int] = (),
    report_written: Collection[int] = (),
) -> int:
    """Record the builds a killed process left unfinished (see the module's docstring);
    return how many. It must never run while a build of this process is under way;
    :func:`cdp.processing.jobs.pipeline.clean_up_interrupted_builds` runs it before each
    build.

    A process can also end, or fail to write the outcome, after publishing: the
    ``publishing`` builds in ``analyst_published`` had their analyst database
    published, those also in ``report_written`` their report too. The latter end
    ``succeeded``, the former ``publish_failed`` saying only the report is missing."""
    noticed = "(finished_at is when a later build noticed)"
    marked = con.execute(
        _MARK_INTERRUPTED,
        {
            "now": datetime.now(UTC),
            "analyst_published": list(analyst_published),
            "report_written": list(report_written),
            "interrupted": "interrupted: its process ended before the build was written "
            f"{noticed}; nothing of it was kept",
            "not_published": f"{_NOT_PUBLISHED}interrupted: its process ended while "
            f"writing it {noticed}",
            "report_not_written": f"{_REPORT_NOT_WRITTEN}interrupted: its process ended "
            f"while writing it {noticed}",
            "recorded": "analyst database and report published; recorded by a later build "
            f"(its process ended, or could not write, before recording it) {noticed}",
        },
    ).fetchall()
    for build_id, status in marked:
        log.warning(
            "build %d was left unfinished by a process that ended: now %s", build_id, status
        )
    return len(marked)


def run_build(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    as_of: datetime | None = None,
    segments: SegmentConfig | None = None,
    progress: Callable[[str], None] | None = None,
    *,
    analyst_publish_follows: bool = False,
) -> BuildReport:
    """Build profiles as of ``as_of`` (default now). ``segments`` defaults to the
    configured segments file, loaded (and so checked) before any work starts;
    ``progress`` is told the name of each stage as it starts. With
    ``analyst_publish_follows`` a build that becomes current is left ``publishing``,
    for the caller to finish with :func:`finish_publishing`. Rows a killed build left
    are the caller's to mark first (:func:`mark_interrupted_builds`)."""
    say = progress or (lambda stage: None)
    started = time.monotonic()
    segments = segments or load_segment_config(settings)
    now = datetime.now(UTC)
    as_of = as_of or now
    build_id = con.execute(
        "INSERT INTO builds (as_of, started_at, status) VALUES ($as_of, $now, 'running') "
        "RETURNING build_id",
        {"as_of": as_of, "now": now},
    ).fetchall()[0][0]
    try:
        # Stages compute into this connection's temp tables (invisible to others);
        # only the publish step below writes shared tables, in one short transaction.
        # (Running the stages inside that transaction too hid large temp tables from
        # later stages' scans in DuckDB 2.0: at ~650k customers they read as empty.)
        say("identities")
        late_copies = count_each_event_once(con)
        parse_order_payloads(con, as_of)
        identity = resolve_identities(con, as_of)
        say("profiles")
        customers = build_profiles(con, settings, as_of)
        say("KPIs and RFM")
        compute_store_kpis(con, settings, as_of)
        score_rfm(con, settings, as_of)
        say("predictive CLV")
        # The backtest first: under clv.model = "auto" it chooses the model.
        con.execute(BUILD_PURCHASES)
        backtest = run_backtest(con, settings, as_of.date())
        models = predict_clv(con, settings, as_of, backtest.chosen, backtest.choice)
        say("segments")
        # Recommendations and consent first, so that the one rewrite of the million
        # profile rows also adds the columns segment rules read (segment_source).
        stage_segment_inputs(con, settings, as_of)
        set_profile_columns(
            con,
            FORMULA_CLV_COLUMNS,
            RFM_COLUMNS,
            PREDICTED_CLV_COLUMNS,
            segment_source_columns(settings),
            params={"as_of": as_of},
        )
        memberships = compute_segments(con, segments, as_of)
        unconverted = unconverted_orders(con)
        count_label = COUNT_MODELS[models.chosen].label
        message = (
            f"{identity.merges} merges; {count_label} {models.count.message} "
            f"({models.choice}); Gamma-Gamma {models.gamma_gamma.message}"
        )
        if unconverted:
            message += f"; {unconverted} orders in currencies without an exchange rate left out"
        if late_copies:
            message += f"; {late_copies} late copies of stored events counted once"
        say("publish")
        with transaction(con):
            apply_identities(con, now)
            _record_models(con, as_of, models)
            publish_backtest(con)
            execute_script(con, _PUBLISH_HISTORY, {"as_of_date": as_of.date()})
            latest = con.execute(
                "SELECT max(as_of) FROM builds WHERE list_contains($live, status)",
                {"live": list(LIVE_BUILD_STATUSES)},
            ).fetchall()[0][0]
            publish_current = latest is None or as_of >= latest
            if publish_current:
                execute_script(con, _PUBLISH_CURRENT, {"columns": profile_column_names(con)})
                publish_segments(con, segments, as_of)
            # In the same transaction: the status says whether the tables are written.
            publishing = publish_current and analyst_publish_follows
            _finish(con, build_id, "publishing" if publishing else "succeeded", customers, message)
    except BaseException as exc:
        _finish(con, build_id, "failed", None, f"{type(exc).__name__}: {exc}")
        raise
    return BuildReport(
        build_id,
        as_of,
        customers,
        identity,
        models,
        backtest,
        unconverted,
        publish_current,
        memberships,
        time.monotonic() - started,
    )


def finish_publishing(
    con: duckdb.DuckDBPyConnection,
    build_id: int,
    error: BaseException | None = None,
    *,
    analyst_published: bool = False,
) -> None:
    """End a ``publishing`` build: ``succeeded``, or ``publish_failed`` with ``error``
    added to its message (which says whether the analyst database was published, and
    so only the report was not)."""
    failure = None
    if error is not None:
        stage = _REPORT_NOT_WRITTEN if analyst_published else _NOT_PUBLISHED
        failure = f"{stage}{type(error).__name__}: {error}"
    con.execute(
        "UPDATE builds SET finished_at = current_timestamp,"
        " status = CASE WHEN $failure IS NULL THEN 'succeeded' ELSE 'publish_failed' END,"
        " message = concat_ws('; ', message, $failure)"
        " WHERE build_id = $id AND status = 'publishing'",
        {"failure": failure, "id": build_id},
    )


def _finish(
    con: duckdb.DuckDBPyConnection, build_id: int, status: str, customers: int | None, message: str
) -> None:
    """``publishing`` is not finished yet: no finished_at."""
    con.execute(
        "UPDATE builds SET status = $status, customers = $customers, message = $message,"
        " finished_at = CASE WHEN $status = 'publishing' THEN NULL ELSE current_timestamp END"
        " WHERE build_id = $id",
        {"status": status, "customers": customers, "message": message, "id": build_id},
    )


def _record_models(con: duckdb.DuckDBPyConnection, as_of: datetime, models: ModelRuns) -> None:
    fits = {**models.counts, "gamma_gamma": models.gamma_gamma}
    con.execute("DELETE FROM clv_model_runs WHERE as_of = $as_of", {"as_of": as_of.date()})
    for name, fit in fits.items():
        params = {
            key: fit.params.get(key)
            for key in ("r", "alpha", "a", "b", "s", "beta", "p", "q", "gamma")
        }
        chosen = name == models.chosen or name == "gamma_gamma"
        con.execute(
            """INSERT INTO clv_model_runs
               (as_of, model, time_unit, customers, r, alpha, a, b, s, beta, p, q, gamma,
                log_likelihood, converged, message, chosen, choice)
               VALUES ($as_of, $model, 'week', $customers, $r, $alpha, $a, $b, $s, $beta, $p,
                       $q, $gamma, $ll, $converged, $message, $chosen, $choice)""",
            {
                "as_of": as_of.date(),
                "model": name,
                "customers": fit.customers,
                **params,
                "ll": fit.log_likelihood if fit.converged else None,
                "converged": fit.converged,
                "message": fit.message,
                "chosen": chosen,
                "choice": models.choice if name == models.chosen else None,
            },
        )
