"""BG/NBD, MBG/NBD and Pareto/NBD against the lifetimes package on CDNOW.

The reference figures — lifetimes' fitted parameters and log-likelihoods on
``cdnow_summary.csv``, and its own per-customer P(alive) and 39-week expected
purchases at those parameters — were computed once by
``data/make_lifetimes_reference.py`` (lifetimes 0.11.3), so the suite does not need
the bench extra.
"""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from cdp.processing.models import mbgnbd, pareto_nbd
from cdp.processing.models.clv_models import COUNT_MODELS
from tests.processing.models.gradients import central_difference

DATA = Path(__file__).parent / "data"
REFERENCE = json.loads((DATA / "lifetimes_fits.json").read_text())["cdnow_summary"]


@pytest.fixture(scope="module")
def cdnow() -> dict[str, np.ndarray]:
    with (DATA / "cdnow_summary.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    return {key: np.array([float(row[key]) for row in rows]) for key in ("x", "t_x", "T")}


@pytest.fixture(scope="module")
def lifetimes_predictions() -> dict[str, np.ndarray]:
    with gzip.open(DATA / "lifetimes_predictions.csv.gz", "rt") as handle:
        rows = list(csv.DictReader(handle))
    return {key: np.array([float(row[key]) for row in rows]) for key in rows[0]}


@pytest.fixture(scope="module")
def fits(cdnow):
    return {
        name: model.fit(cdnow["x"], cdnow["t_x"], cdnow["T"], None)
        for name, model in COUNT_MODELS.items()
    }


@pytest.mark.parametrize("name", sorted(COUNT_MODELS))
def test_fit_on_cdnow_equals_lifetimes_fit_within_a_tenth_of_a_percent(fits, name):
    fit, reference = fits[name], REFERENCE[name]
    assert fit.converged, fit.message
    assert fit.customers == 2357
    for parameter, theirs in reference["params"].items():
        assert fit.params[parameter] == pytest.approx(theirs, rel=1e-3), parameter
    assert fit.log_likelihood == pytest.approx(reference["log_likelihood"], rel=1e-3)
    # Not worse than lifetimes' optimum (Nelder-Mead stops a little short of it).
    assert fit.log_likelihood >= reference["log_likelihood"] - 1e-6


@pytest.mark.parametrize("name", sorted(COUNT_MODELS))
def test_likelihood_at_lifetimes_parameters_is_lifetimes_value(cdnow, name):
    reference = REFERENCE[name]
    value = COUNT_MODELS[name].log_likelihood(
        reference["params"], cdnow["x"], cdnow["t_x"], cdnow["T"]
    )
    assert value == pytest.approx(reference["log_likelihood"], rel=1e-9)


@pytest.mark.parametrize("name", sorted(COUNT_MODELS))
def test_per_customer_predictions_equal_lifetimes_functions(cdnow, lifetimes_predictions, name):
    model, params = COUNT_MODELS[name], REFERENCE[name]["params"]
    x, t_x, T = cdnow["x"], cdnow["t_x"], cdnow["T"]
    p_alive = model.probability_alive(params, x, t_x, T)
    expected = model.expected_purchases(params, 39.0, x, t_x, T)
    assert np.allclose(p_alive, lifetimes_predictions[f"{name}_p_alive"], rtol=1e-8, atol=1e-12)
    assert np.allclose(expected, lifetimes_predictions[f"{name}_expected"], rtol=1e-8, atol=1e-12)


def test_mbgnbd_customers_who_never_bought_again_may_have_left():
    params = REFERENCE["mbgnbd"]["params"]
    never, recent = mbgnbd.mbgnbd_probability_alive(
        params, np.array([0.0, 3.0]), np.array([0.0, 38.0]), np.array([39.0, 39.0])
    )
    assert 0 < never < 1 and 0 < recent < 1


@pytest.mark.parametrize(
    ("module", "point"),
    [
        (mbgnbd, np.array([0.5, 0.15, 0.9, 1.6])),
        (pareto_nbd, np.array([0.55, 0.27, 0.6, 0.3])),
        (pareto_nbd, np.array([0.55, 0.9, 0.6, 0.05])),  # beta < alpha: the other branch
    ],
)
def test_analytic_gradients_match_finite_differences(cdnow, module, point):
    # On the unit time scale the fits use.
    x, t_x, T = cdnow["x"], cdnow["t_x"] / 39, cdnow["T"] / 39
    rows = module._Rows.of(x, t_x, T, np.ones_like(x))
    _, gradient = module._value_and_gradient(point, rows)
    numeric = central_difference(lambda p: module._value_and_gradient(p, rows)[0], point)
    assert np.allclose(gradient, numeric, rtol=1e-5)


def test_pareto_nbd_integral_agrees_with_30_digit_quadrature_in_hard_corners():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 30
    cases = [  # (r, alpha, s, beta, x, t_x, T): tiny scales, many purchases, t_x near 0 or T
        (0.1, 0.0003, 2.3, 0.06, 150, 1e-4, 1.0),
        (0.8, 1.4, 8.8, 4.5, 150, 1e-4, 1.0),
        (3.0, 0.18, 0.17, 0.0004, 150, 0.999, 1.0),
        (0.55, 10.6, 0.61, 11.7, 0, 0.0, 39.0),
        (0.55, 10.6, 0.61, 11.7, 20, 38.0, 39.0),
    ]
    for r, alpha, s, beta, x, t_x, T in cases:
        log_i = pareto_nbd._log_integral(
            r, alpha, s, beta, np.array([x], float), np.array([t_x]), np.array([T])
        )

        def integrand(tau, r=r, alpha=alpha, s=s, beta=beta, x=x):
            return (alpha + tau) ** (-(r + x)) * (beta + tau) ** (-(s + 1))

        low = min(alpha, beta)
        steps = (1e-3, 1e-2, 0.1, 0.3, 1, 3, 10, 30, 100, 1e3, 1e4)
        points = [t_x, *(t_x + low * k for k in steps if t_x + low * k < T), T]
        exact = mpmath.log(mpmath.quad(integrand, points, maxdegree=10))
        assert float(log_i[0]) == pytest.approx(float(exact), abs=1e-6)


@pytest.mark.parametrize("name", sorted(COUNT_MODELS))
@pytest.mark.parametrize(
    ("x", "t_x", "T"),
    [
        ([0, 0, 0, 0], [0, 0, 0, 0], [10, 20, 30, 40]),  # nobody repeats
        ([3], [5.0], [9.0]),  # one customer
        ([0] * 50, [0.0] * 50, [0.0] * 50),  # everything on one day
    ],
)
def test_degenerate_inputs_report_why_and_never_produce_nan(name, x, t_x, T):
    fit = COUNT_MODELS[name].fit(np.array(x, float), np.array(t_x, float), np.array(T, float), None)
    assert not fit.converged
    assert fit.message and "NaN" not in fit.message
