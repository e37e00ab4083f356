"""The source material's worked examples and the KPI formulas, computed by a real build."""

import math
from decimal import Decimal

import pytest

from cdp.ingest.generator import generate_store
from cdp.ingest.loader import load_file
from cdp.ingest.validation import ValidationLimits
from cdp.processing.stages.run import run_build
from tests.processing.store import AS_OF, days_ago, event, order, settings, store

VND = {"money": {"reporting_currency": "VND", "exchange_rates": {"VND": 1.0}}}


def _profile(con, column: str, user: str):
    return con.execute(
        f"SELECT {column} FROM customer_profiles WHERE user_id = $u", {"u": user}
    ).fetchall()[0][0]


def _kpi(con, column: str):
    return con.execute(f"SELECT {column} FROM store_kpis").fetchall()[0][0]


def test_cake_every_year_for_three_years_is_worth_900000_to_date(memory_db):
    store(
        memory_db,
        *(
            order("cake-lover", days_ago(365 * years + 10), "300000", currency="VND")
            for years in range(3)
        ),
    )
    run_build(memory_db, settings(**VND), AS_OF)
    assert _profile(memory_db, "historic_clv", "cake-lover") == Decimal("900000")
    assert _profile(memory_db, "orders", "cake-lover") == 3


@pytest.mark.parametrize(
    ("order_value", "expected_clv"), [("100000", 1_000_000), ("150000", 1_500_000)]
)
def test_raising_aov_by_half_raises_basic_clv_by_half(memory_db, order_value, expected_clv):
    # Two orders a year per customer, a five-year lifespan: CLV = AOV x 2 x 5.
    store(
        memory_db,
        *(
            order(f"c{n}", days_ago(day), order_value, currency="VND")
            for n in range(4)
            for day in (50, 200)
        ),
    )
    config = {**VND, "clv": {"default_lifespan_years": 5.0}}
    run_build(memory_db, settings(**config), AS_OF)
    assert _kpi(memory_db, "aov") == pytest.approx(float(order_value))
    assert _kpi(memory_db, "purchase_frequency") == pytest.approx(2.0)
    assert _kpi(memory_db, "basic_clv") == pytest.approx(expected_clv)
    assert _profile(memory_db, "basic_clv", "c0") == pytest.approx(expected_clv)


def test_refunds_and_cancellations_subtract_from_net_revenue(memory_db):
    store(
        memory_db,
        order("u", days_ago(40), "100.00", order_id="kept"),
        order("u", days_ago(30), "80.00", order_id="partly-refunded"),
        event(
            "order_refunded",
            days_ago(25),
            user_id="u",
            properties={"order_id": "partly-refunded", "total": "30.00"},
        ),
        order("u", days_ago(20), "50.00", order_id="cancelled"),
        event("order_cancelled", days_ago(19), user_id="u", properties={"order_id": "cancelled"}),
        order("u", days_ago(10), "60.00", order_id="fully-refunded"),
        event(
            "order_refunded", days_ago(5), user_id="u", properties={"order_id": "fully-refunded"}
        ),
    )
    run_build(memory_db, settings(), AS_OF)
    row = memory_db.execute(
        "SELECT orders, gross_revenue, refunded, net_revenue, aov FROM customer_profiles"
    ).fetchall()[0]
    assert row == (3, Decimal("290"), Decimal("140"), Decimal("150"), Decimal("50"))


def test_orders_in_other_currencies_are_converted_to_the_reporting_currency(memory_db):
    store(
        memory_db,
        order("u", days_ago(3), "92.00", currency="EUR"),
        order("u", days_ago(2), "100", currency="USD"),
    )
    run_build(memory_db, settings(), AS_OF)  # EUR rate 0.92 per USD
    assert _profile(memory_db, "net_revenue", "u") == Decimal("200")


def test_late_and_out_of_order_events_count_and_as_of_excludes_later_ones(memory_db):
    store(memory_db, order("u", days_ago(1), "10"), order("u", days_ago(100), "20"))
    run_build(memory_db, settings(), AS_OF)
    assert _profile(memory_db, "orders", "u") == 2
    store(memory_db, order("u", days_ago(200), "30"))  # arrives late, happened long ago
    run_build(memory_db, settings(), AS_OF)
    assert _profile(memory_db, "orders", "u") == 3
    assert _profile(memory_db, "first_order_at", "u") == days_ago(200)
    run_build(memory_db, settings(), days_ago(50))  # a backfill: history only
    history = memory_db.execute(
        "SELECT as_of, orders FROM profile_history ORDER BY as_of"
    ).fetchall()
    assert [orders for _, orders in history] == [2, 3]  # as of 50 days ago: two orders


def test_rerunning_the_same_as_of_replaces_its_history(memory_db):
    store(memory_db, order("u", days_ago(3), "10"))
    for _ in range(3):
        run_build(memory_db, settings(), AS_OF)
    assert memory_db.execute("SELECT count(*) FROM profile_history").fetchall()[0][0] == 1
    assert memory_db.execute("SELECT count(*) FROM store_kpis").fetchall()[0][0] == 1


def test_degenerate_stores_fall_back_without_nan(memory_db):
    # One customer, one order: nothing to fit a repeat-purchase model on.
    store(memory_db, order("only", days_ago(3), "42"))
    report = run_build(memory_db, settings(), AS_OF)
    assert not report.models.bgnbd.converged
    runs = memory_db.execute(
        "SELECT model, converged, message FROM clv_model_runs ORDER BY 1"
    ).fetchall()
    assert [(model, converged) for model, converged, _ in runs] == [
        ("bgnbd", False),
        ("gamma_gamma", False),
        ("mbgnbd", False),
        ("pareto_nbd", False),
    ]
    assert all("repeat" in message for _, _, message in runs)
    values = memory_db.execute(
        "SELECT predicted_clv, p_alive, expected_purchases, expected_spend_per_order FROM customer_profiles"  # noqa: E501
    ).fetchall()[0]
    assert all(value is not None and math.isfinite(value) for value in values)


def test_predictive_clv_is_fitted_on_a_synthetic_store(memory_db, tmp_path):
    source = tmp_path / "store.jsonl"
    generate_store(source, customers=600, seed=11, end=AS_OF.date())
    load_file(memory_db, source, limits=ValidationLimits())
    report = run_build(memory_db, settings(), AS_OF)
    assert report.models.bgnbd.converged, report.models.bgnbd.message
    assert report.models.gamma_gamma.converged, report.models.gamma_gamma.message
    rows = memory_db.execute(
        "SELECT count(*), min(p_alive), max(p_alive), min(predicted_clv), max(predicted_clv),"
        " count(*) FILTER (WHERE isnan(predicted_clv)) FROM customer_profiles WHERE orders > 0"
    ).fetchall()[0]
    assert rows[0] > 100 and 0 <= rows[1] <= rows[2] <= 1
    assert 0 <= rows[3] < rows[4] and rows[5] == 0
    fitted = memory_db.execute(
        "SELECT r, alpha, a, b, time_unit, converged FROM clv_model_runs WHERE model = 'bgnbd'"
    ).fetchall()[0]
    assert all(value > 0 for value in fitted[:4]) and fitted[4:] == ("week", True)
    segments = {
        row[0]
        for row in memory_db.execute(
            "SELECT DISTINCT rfm_segment FROM customer_profiles"
        ).fetchall()
    }
    assert len(segments - {None}) >= 6
    # The same data gives the same fit when the build is re-run.
    again = run_build(memory_db, settings(), AS_OF)
    assert again.models.bgnbd.params == report.models.bgnbd.params


def test_cac_and_ltv_to_cac_from_marketing_spend(memory_db, tmp_path):
    spend = tmp_path / "spend.csv"
    spend.write_text(
        "period,channel,spend\n2026-05,google,300\n2026-06,meta,100\n2024-01,google,999\n"
    )
    store(memory_db, *(order(f"new{n}", days_ago(20), "100") for n in range(4)))
    run_build(
        memory_db,
        settings(clv={"marketing_spend_csv": str(spend), "default_lifespan_years": 3.0}),
        AS_OF,
    )
    assert _kpi(memory_db, "marketing_spend") == 400
    assert _kpi(memory_db, "cac") == pytest.approx(100)
    assert _kpi(memory_db, "ltv_to_cac") == pytest.approx(_kpi(memory_db, "basic_clv") / 100)


def test_maximum_cost_per_click_is_clv_times_conversion_rate(memory_db):
    store(
        memory_db,
        *(
            event("product_viewed", days_ago(5), user_id=f"v{n}", properties={"product_id": "p"})
            for n in range(10)
        ),
        order("v0", days_ago(4), "100"),
    )
    run_build(memory_db, settings(), AS_OF)
    assert _kpi(memory_db, "conversion_rate") == pytest.approx(0.1)
    assert _kpi(memory_db, "max_cost_per_click") == pytest.approx(
        _kpi(memory_db, "basic_clv") * 0.1
    )


def test_monthly_churn_follows_its_definition(memory_db):
    from datetime import UTC, datetime, timedelta

    order_days = {
        "steady": range(5, 420, 10),
        "stopped": range(200, 420, 10),
        "sporadic": [15, 100, 250, 390],
        "newcomer": [3, 20],
    }
    store(
        memory_db,
        *(order(user, days_ago(d), "10") for user, days in order_days.items() for d in days),
    )
    run_build(memory_db, settings(clv={"inactive_after_days": 30}), AS_OF)

    # The definition in processing/clv.py, written out: for each of the 12 month starts
    # before as-of, the share of customers active then (an order in the 30 days up to
    # it) who are not active a month later; averaged over months with anyone active.
    def active(user: str, at: datetime) -> bool:
        return any(at - timedelta(days=30) < days_ago(d) <= at for d in order_days[user])

    def add_month(day: datetime, months: int) -> datetime:
        total = day.year * 12 + day.month - 1 + months
        return day.replace(year=total // 12, month=total % 12 + 1)

    this_month = datetime(AS_OF.year, AS_OF.month, 1, tzinfo=UTC)
    rates = []
    for back in range(12, 0, -1):
        start = add_month(this_month, -back)
        active_then = [user for user in order_days if active(user, start)]
        if active_then:
            end = add_month(start, 1)
            rates.append(sum(not active(user, end) for user in active_then) / len(active_then))
    assert 0.1 < sum(rates) / len(rates) < 0.9  # the patterns above do churn
    assert _kpi(memory_db, "churn_rate_monthly") == pytest.approx(sum(rates) / len(rates))
    assert _kpi(memory_db, "retention_rate_monthly") == pytest.approx(1 - sum(rates) / len(rates))
