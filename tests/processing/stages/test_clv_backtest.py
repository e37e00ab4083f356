"""The backtest of predicted CLV: on CDNOW against lifetimes, and on stores where the
right answer is known."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest

from cdp.processing.stages.clv_backtest import plan_holdout, run_backtest
from tests.processing.store import settings

DATA = Path(__file__).parents[1] / "models" / "data"
LIFETIMES = json.loads((DATA / "lifetimes_fits.json").read_text())["cdnow_master_backtest"]


def _purchases(con: duckdb.DuckDBPyConnection, rows: list[tuple[str, date, float]]) -> None:
    con.execute(
        "CREATE OR REPLACE TABLE purchases (customer_id VARCHAR, day DATE, value DECIMAL(18, 4))"
    )
    if rows:
        con.executemany("INSERT INTO purchases VALUES (?, ?, ?)", rows)
    con.execute("CREATE OR REPLACE TEMP VIEW backtest_purchases AS FROM purchases")


@pytest.fixture(scope="module")
def cdnow_backtest():
    con = duckdb.connect()
    con.execute(
        "CREATE TEMP TABLE backtest_purchases AS SELECT customer_id::VARCHAR AS customer_id,"
        " day, value::DECIMAL(18, 4) AS value FROM read_csv($path)",
        {"path": str(DATA / "cdnow_master.csv.gz")},
    )
    backtest = run_backtest(con, settings(), date(1998, 6, 30), holdout_days=273)
    yield backtest
    con.close()


@pytest.mark.parametrize("model", ["bgnbd", "mbgnbd", "pareto_nbd"])
def test_cdnow_backtest_reproduces_lifetimes_forecast_totals(cdnow_backtest, model):
    row = next(row for row in cdnow_backtest.rows if row["model"] == model)
    reference = LIFETIMES[model]
    assert row["calibration_end"] == date(1997, 9, 30)
    assert row["holdout_days"] == 273 and not row["holdout_shortened"]
    assert row["customers"] == 23_570
    assert row["actual_purchases"] == 19_684
    assert row["converged"], row["message"]
    assert row["forecast_purchases"] == pytest.approx(reference["forecast_purchases"], rel=1e-3)
    assert row["ratio"] == pytest.approx(reference["ratio"], abs=1e-3)
    assert row["mae"] == pytest.approx(reference["mae"], rel=1e-3)
    assert row["rmse"] == pytest.approx(reference["rmse"], rel=1e-3)


def test_cdnow_backtest_has_a_readable_calibration_table_and_spend(cdnow_backtest):
    row = next(row for row in cdnow_backtest.rows if row["model"] == "bgnbd")
    table = row["calibration"]
    assert [bucket["repeat_purchases"] for bucket in table] == [*"01234567"[:7], "7+"]
    assert sum(bucket["customers"] for bucket in table) == 23_570
    # One-time buyers buy least in the holdout; the most frequent buyers most.
    assert table[0]["mean_actual"] < table[-1]["mean_actual"]
    assert table[0]["mean_forecast"] < table[-1]["mean_forecast"]
    assert row["forecast_mean_spend"] == pytest.approx(row["actual_mean_spend"], rel=0.25)
    # A tenth of the customers bring well over a tenth of the holdout revenue.
    assert 0.3 < row["top_decile_revenue_share"] <= 1


def test_auto_chooses_the_lowest_holdout_mae_and_says_why(cdnow_backtest):
    lowest = min(cdnow_backtest.rows, key=lambda row: row["mae"])
    assert cdnow_backtest.chosen == lowest["model"]
    assert cdnow_backtest.choice.startswith("auto: lowest holdout MAE")
    assert [row["model"] for row in cdnow_backtest.rows if row["chosen"]] == [lowest["model"]]


AS_OF = date(2026, 6, 30)


def _weekly_buyers(customers: int, start_weeks_ago: int, stop_weeks_ago: int) -> list:
    return [
        (f"c{n:03d}", AS_OF - timedelta(weeks=week, days=n % 7), 20.0)
        for n in range(customers)
        for week in range(stop_weeks_ago, start_weeks_ago)
    ]


def test_everyone_buying_weekly_and_going_on_is_forecast_about_right():
    con = duckdb.connect()
    _purchases(con, _weekly_buyers(60, start_weeks_ago=104, stop_weeks_ago=0))
    backtest = run_backtest(con, settings(), AS_OF, holdout_days=182)
    for row in backtest.rows:
        # Identical customers who never leave do not identify the models' mixing
        # distributions: a fit may run to a bound and the forecast fall back to each
        # customer's own rate — which is right here.
        assert row["actual_purchases"] == pytest.approx(60 * 26, rel=0.02)
        assert row["ratio"] == pytest.approx(1.0, abs=0.1), row["model"]
        assert row["mae"] < 3  # of ~26 purchases each
        assert row["forecast_mean_spend"] == pytest.approx(20.0, rel=0.01)
        assert row["actual_mean_spend"] == pytest.approx(20.0)


def test_everyone_stopping_before_the_holdout_is_forecast_to_buy_little():
    con = duckdb.connect()
    # A year of weekly buying that ended half a year before the calibration end.
    rows = _weekly_buyers(60, start_weeks_ago=104 + 26, stop_weeks_ago=26 + 26)
    _purchases(con, rows)
    backtest = run_backtest(con, settings(), AS_OF, holdout_days=182)
    for row in backtest.rows:
        assert row["actual_purchases"] == 0
        assert row["ratio"] is None  # no actual purchases to compare with
        # BG/NBD-type models see weekly buyers silent for 26 weeks as gone.
        assert row["forecast_purchases"] / row["customers"] < 1.0, row["model"]


def test_tiny_and_empty_stores_get_rows_that_say_why_without_nan():
    con = duckdb.connect()
    _purchases(con, [])
    backtest = run_backtest(con, settings(), AS_OF)
    assert {row["model"] for row in backtest.rows} == {"bgnbd", "mbgnbd", "pareto_nbd"}
    assert all(row["customers"] == 0 and "no orders" in row["message"] for row in backtest.rows)
    assert backtest.chosen == "bgnbd" and "no model" in backtest.choice

    _purchases(con, [("a", AS_OF - timedelta(days=100), 10.0), ("a", AS_OF, 12.0)])
    backtest = run_backtest(con, settings(), AS_OF)
    for row in backtest.rows:
        assert not row["converged"] and "repeat buyers" in row["message"]
        assert row["customers"] == 1
        for key in ("forecast_purchases", "mae", "rmse"):
            assert row[key] == row[key]  # not NaN


def test_a_store_with_less_history_than_the_horizon_gets_a_shorter_holdout_and_says_so():
    con = duckdb.connect()
    _purchases(con, _weekly_buyers(30, start_weeks_ago=20, stop_weeks_ago=0))
    backtest = run_backtest(con, settings(), AS_OF)  # horizon: 12 months
    row = backtest.rows[0]
    assert row["holdout_shortened"] and row["holdout_days"] < 365
    assert "shortened from the 365-day horizon" in row["message"]
    assert row["calibration_end"] == AS_OF - timedelta(days=row["holdout_days"])


def test_holdout_plans():
    first = AS_OF - timedelta(days=545)
    assert plan_holdout(first, AS_OF, 273, 365).days == 273
    default = plan_holdout(first, AS_OF, None, 365)
    assert default.days == 273 and default.shortened
    assert plan_holdout(first, AS_OF, None, 90).days == 90
    assert plan_holdout(AS_OF - timedelta(days=5), AS_OF, None, 365).calibration_end is None
    assert plan_holdout(first, AS_OF, 600, 365).calibration_end is None
    assert plan_holdout(None, AS_OF, None, 365).calibration_end is None


@pytest.fixture(scope="module")
def synthetic_build(tmp_path_factory):
    from cdp.ingest.generator import generate_store
    from cdp.ingest.loader import load_file
    from cdp.ingest.validation import ValidationLimits
    from cdp.processing.stages.run import run_build
    from cdp.storage.database import memory_database
    from tests.processing.store import AS_OF as BUILD_AS_OF

    source = tmp_path_factory.mktemp("store") / "store.jsonl"
    generate_store(source, customers=600, seed=11, end=BUILD_AS_OF.date())
    con = memory_database()
    load_file(con, source, limits=ValidationLimits())
    report = run_build(con, settings(), BUILD_AS_OF)
    yield con, report
    con.close()


def test_every_build_leaves_a_backtest_row_per_model_and_predicts_with_the_chosen(
    synthetic_build,
):
    con, report = synthetic_build
    rows = con.execute(
        "SELECT model, holdout_days, customers, actual_purchases, mae, chosen, message"
        " FROM clv_backtests ORDER BY model"
    ).fetchall()
    assert [row[0] for row in rows] == ["bgnbd", "mbgnbd", "pareto_nbd"]
    assert all(row[2] > 0 and row[4] is not None for row in rows)
    assert [row[0] for row in rows if row[5]] == [report.models.chosen]
    chosen = con.execute(
        "SELECT model, choice FROM clv_model_runs WHERE chosen AND model <> 'gamma_gamma'"
    ).fetchall()
    assert chosen == [(report.models.chosen, report.models.choice)]
    assert report.models.choice.startswith("auto: lowest holdout MAE")
    build_message = con.execute("SELECT message FROM builds").fetchall()[0][0]
    assert report.models.choice in build_message


def test_a_configured_model_is_used_whatever_the_backtest_says(synthetic_build):
    from cdp.processing.stages.run import run_build
    from tests.processing.store import AS_OF as BUILD_AS_OF

    con, _ = synthetic_build
    report = run_build(con, settings(clv={"model": "pareto_nbd"}), BUILD_AS_OF)
    assert report.models.chosen == "pareto_nbd"
    assert report.models.choice == "clv.model = 'pareto_nbd'"
    chosen = con.execute("SELECT model FROM clv_backtests WHERE chosen").fetchall()
    assert chosen == [("pareto_nbd",)]
    # Re-running the as-of replaces its rows.
    assert con.execute("SELECT count(*) FROM clv_backtests").fetchall()[0][0] == 3
