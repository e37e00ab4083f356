"""Month-end builds over a past year, as ``cdp demo`` makes them."""

from __future__ import annotations

from datetime import UTC, date, datetime

from cdp.processing.jobs.backfill import backfill_month_ends, month_ends
from cdp.processing.segmentation.config import load_segment_config
from cdp.settings import Settings
from cdp.storage.database import connect


def test_month_ends_are_the_last_moments_of_the_months_before():
    ends = month_ends(datetime(2026, 3, 15, 8, tzinfo=UTC), 3)
    assert [e.date() for e in ends] == [date(2025, 12, 31), date(2026, 1, 31), date(2026, 2, 28)]
    assert ends[0].hour == 23 and ends[0].minute == 59 and ends[0].tzinfo is UTC
    leap = month_ends(datetime(2024, 3, 1, tzinfo=UTC), 1)
    assert leap[0].date() == date(2024, 2, 29)


def test_backfill_gives_every_trend_a_point_per_month(tmp_path):
    from cdp.ingest.generator import generate_store
    from cdp.ingest.loader import load_file
    from cdp.ingest.validation import ValidationLimits

    settings = Settings(storage={"db_path": tmp_path / "s.duckdb"})
    generate_store(tmp_path / "s.jsonl", customers=200, seed=3, end=date(2026, 11, 1))
    heard = []
    with connect(settings.storage.db_path) as con:
        load_file(con, tmp_path / "s.jsonl", limits=ValidationLimits.from_settings(settings.ingest))
        reports = backfill_month_ends(
            con,
            settings,
            load_segment_config(settings),
            before=datetime(2026, 11, 5, tzinfo=UTC),
            months=12,
            built=heard.append,
        )
        kpi_dates = con.execute("SELECT count(DISTINCT as_of) FROM store_kpis").fetchall()[0][0]
        size_dates = con.execute("SELECT count(DISTINCT as_of) FROM segment_sizes").fetchall()
        stays = con.execute(
            "SELECT count(*) FROM segment_membership_history WHERE exited_at IS NOT NULL"
        ).fetchall()[0][0]
        latest = con.execute("SELECT max(as_of) FROM customer_profiles").fetchall()[0][0]
    assert len(reports) == 12 and heard == reports
    assert all(report.published_current for report in reports)  # each the latest then
    assert kpi_dates == 12 and size_dates == [(12,)]
    assert stays > 0  # members left segments month by month: past stays to show
    assert latest.date() == date(2026, 10, 31)
