"""``cdp backtest``'s job: the published orders of the latest build, any as-of before it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cdp.errors import CdpError
from cdp.processing.jobs.backtest import backtest_published_orders
from cdp.processing.stages.run import run_build
from tests.processing.store import AS_OF, days_ago, order, settings, store


def test_without_a_build_it_says_to_run_one(memory_db):
    with pytest.raises(CdpError, match="no build yet"):
        backtest_published_orders(memory_db, settings())


def test_it_backtests_the_published_orders_and_replaces_that_dates_rows(memory_db):
    store(
        memory_db,
        *(order(f"c{n}", days_ago(day + n), "30") for n in range(30) for day in range(0, 400, 20)),
    )
    run_build(memory_db, settings(), AS_OF)
    result = backtest_published_orders(memory_db, settings(), holdout_days=60)
    assert result.as_of == AS_OF.date()
    assert result.holdout.calibration_end == AS_OF.date() - timedelta(days=60)
    assert all(row["customers"] == 30 for row in result.rows)
    stored = memory_db.execute("SELECT DISTINCT as_of, holdout_days FROM clv_backtests").fetchall()
    assert stored == [(AS_OF.date(), 60)]  # the build's own rows (365 days) replaced
    # One that cannot run (no calibration period left) says so and keeps those rows.
    impossible = backtest_published_orders(memory_db, settings(), holdout_days=5000)
    assert impossible.holdout.calibration_end is None
    assert "no calibration period" in impossible.holdout.note
    assert memory_db.execute("SELECT DISTINCT holdout_days FROM clv_backtests").fetchall() == [
        (60,)
    ]
    with pytest.raises(CdpError, match="after the latest build"):
        backtest_published_orders(memory_db, settings(), AS_OF.date() + timedelta(days=1))
