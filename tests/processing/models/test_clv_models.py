"""BG/NBD and Gamma-Gamma against the published CDNOW estimates, and on bad data."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from cdp.processing.models.clv_models import (
    bgnbd_expected_purchases,
    bgnbd_log_likelihood,
    bgnbd_probability_alive,
    discounted_clv,
    fit_bgnbd,
    fit_gamma_gamma,
    gamma_gamma_expected_spend,
)
from tests.processing.models.gradients import central_difference

DATA = Path(__file__).parent / "data" / "cdnow_summary.csv"
# Fader, Hardie & Lee (2005), Marketing Science 24(2): BG/NBD on the CDNOW sample.
PUBLISHED_BGNBD = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
PUBLISHED_LOG_LIKELIHOOD = -9582.4
# Fader, Hardie & Lee (2005), Journal of Marketing Research 42(4): Gamma-Gamma.
PUBLISHED_GAMMA_GAMMA = {"p": 6.25, "q": 3.74, "gamma": 15.44}


@pytest.fixture(scope="module")
def cdnow() -> dict[str, np.ndarray]:
    with DATA.open() as handle:
        rows = list(csv.DictReader(handle))
    return {key: np.array([float(row[key]) for row in rows]) for key in ("x", "t_x", "T", "zbar")}


def test_bgnbd_fit_matches_published_cdnow_estimates_within_1_percent(cdnow):
    fit = fit_bgnbd(cdnow["x"], cdnow["t_x"], cdnow["T"])
    assert fit.converged, fit.message
    assert fit.customers == 2357
    for name, published in PUBLISHED_BGNBD.items():
        assert fit.params[name] == pytest.approx(published, rel=0.01), name
    assert fit.log_likelihood == pytest.approx(PUBLISHED_LOG_LIKELIHOOD, abs=0.1)


def test_gamma_gamma_fit_matches_published_cdnow_estimates_within_1_percent(cdnow):
    fit = fit_gamma_gamma(cdnow["x"], cdnow["zbar"])
    assert fit.converged, fit.message
    assert fit.customers == 946  # repeat buyers
    for name, published in PUBLISHED_GAMMA_GAMMA.items():
        assert fit.params[name] == pytest.approx(published, rel=0.01), name


def test_fitting_distinct_rows_with_counts_equals_fitting_every_customer(cdnow):
    rows = np.stack([cdnow["x"], cdnow["t_x"], cdnow["T"]], axis=1)
    distinct, counts = np.unique(rows, axis=0, return_counts=True)
    assert len(distinct) < len(rows)
    grouped = fit_bgnbd(distinct[:, 0], distinct[:, 1], distinct[:, 2], counts)
    every = fit_bgnbd(cdnow["x"], cdnow["t_x"], cdnow["T"])
    for name in PUBLISHED_BGNBD:
        assert grouped.params[name] == pytest.approx(every.params[name], rel=1e-4)


def test_likelihood_at_the_published_parameters_is_the_published_value(cdnow):
    value = bgnbd_log_likelihood(PUBLISHED_BGNBD, cdnow["x"], cdnow["t_x"], cdnow["T"])
    assert value == pytest.approx(PUBLISHED_LOG_LIKELIHOOD, abs=0.5)


def test_predictions_behave_as_the_model_says():
    params = PUBLISHED_BGNBD
    # Never bought again: certainly alive under BG/NBD (drop-out happens after purchases).
    assert (
        bgnbd_probability_alive(params, np.array([0.0]), np.array([0.0]), np.array([39.0]))[0]
        == 1.0
    )
    # Same history, a longer silence since the last purchase: less likely alive.
    recent, stale = bgnbd_probability_alive(
        params, np.array([5.0, 5.0]), np.array([38.0, 10.0]), np.array([39.0, 39.0])
    )
    assert 0 < stale < recent < 1
    # Expected purchases grow with the horizon and are finite.
    horizons = [
        bgnbd_expected_purchases(params, t, np.array([2.0]), np.array([30.43]), np.array([38.86]))[
            0
        ]
        for t in (1, 10, 39, 100)
    ]
    assert all(np.isfinite(horizons)) and horizons == sorted(horizons) and horizons[0] > 0


def test_gamma_gamma_shrinks_a_buyers_mean_toward_the_population_mean():
    params = PUBLISHED_GAMMA_GAMMA
    population = params["p"] * params["gamma"] / (params["q"] - 1)
    one_big_order, many_big_orders = gamma_gamma_expected_spend(
        params, np.array([1.0, 20.0]), np.array([200.0, 200.0]), 0.0
    )
    assert population < one_big_order < many_big_orders < 200.0
    assert gamma_gamma_expected_spend(params, np.array([0.0]), np.array([0.0]), 0.0)[
        0
    ] == pytest.approx(population)


@pytest.mark.parametrize(
    ("x", "t_x", "T"),
    [
        ([0, 0, 0, 0], [0, 0, 0, 0], [10, 20, 30, 40]),  # nobody repeats
        ([3], [5.0], [9.0]),  # one customer
        ([0] * 50, [0.0] * 50, [0.0] * 50),  # everything on one day
    ],
)
def test_degenerate_inputs_report_why_and_never_produce_nan(x, t_x, T):
    fit = fit_bgnbd(np.array(x, float), np.array(t_x, float), np.array(T, float))
    assert not fit.converged
    assert fit.message and "NaN" not in fit.message
    spend = gamma_gamma_expected_spend({}, np.array(x, float), np.array([10.0] * len(x)), 25.0)
    assert np.all(np.isfinite(spend))


def test_gamma_gamma_with_too_few_repeaters_reports_it():
    fit = fit_gamma_gamma(np.array([1.0, 0.0]), np.array([10.0, 0.0]))
    assert not fit.converged and "repeat buyers" in fit.message


def test_undiscounted_clv_is_expected_purchases_times_spend():
    params = PUBLISHED_BGNBD
    x, t_x, T = np.array([4.0]), np.array([30.0]), np.array([39.0])
    clv = discounted_clv(
        params,
        np.array([50.0]),
        x,
        t_x,
        T,
        months=12,
        units_per_month=52 / 12,
        annual_discount_rate=0.0,
    )
    expected = bgnbd_expected_purchases(params, 52, x, t_x, T) * 50.0
    assert clv[0] == pytest.approx(expected[0])
    discounted = discounted_clv(
        params,
        np.array([50.0]),
        x,
        t_x,
        T,
        months=12,
        units_per_month=52 / 12,
        annual_discount_rate=0.1,
    )
    assert 0 < discounted[0] < clv[0]


def test_analytic_gradients_match_finite_differences(cdnow):
    from cdp.processing.models.bgnbd import _bgnbd_value_and_gradient, _Rows
    from cdp.processing.models.gamma_gamma import _gamma_gamma_log_likelihood_rows as gg_rows
    from cdp.processing.models.gamma_gamma import _gamma_gamma_value_and_gradient as gg_value
    from cdp.processing.models.gamma_gamma import _SpendRows

    x, t_x, T = cdnow["x"], cdnow["t_x"], cdnow["T"]
    point = np.array([0.3, 5.0, 0.8, 2.5])
    rows = _Rows.of(x, t_x, T, np.ones_like(x))
    value, gradient = _bgnbd_value_and_gradient(point, rows)
    assert value == pytest.approx(
        bgnbd_log_likelihood(dict(zip(("r", "alpha", "a", "b"), point, strict=True)), x, t_x, T)
    )
    numeric = central_difference(lambda p: _bgnbd_value_and_gradient(p, rows)[0], point)
    assert np.allclose(gradient, numeric, rtol=1e-6)

    repeat = x > 0
    xr, m = x[repeat], cdnow["zbar"][repeat]
    point = np.array([6.0, 3.5, 15.0])
    spend_rows = _SpendRows(xr, m, np.ones_like(xr))
    value, gradient = gg_value(point, spend_rows)
    assert value == pytest.approx(gg_rows(*point, xr, m).sum())
    # Differenced per row: the summed form cancels large terms, so its own finite
    # differences are noisier than the analytic gradient.
    numeric = central_difference(lambda p: gg_rows(*p, xr, m).sum(), point)
    assert np.allclose(gradient, numeric, rtol=1e-5)
