"""Gamma-Gamma (Fader, Hardie & Lee 2005, "RFM and CLV: Using Iso-Value Curves").

The value of each repeat order is Gamma(p, ν) with ν ~ Gamma(q, γ) across
customers; fitted on customers with at least one repeat purchase and their mean
repeat-order value ``m``.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from cdp.processing.models._fitting import (
    MIN_REPEAT_CUSTOMERS,
    FitResult,
    judge_fit,
    minimize,
    objective,
    per_distinct_x,
)


def _gamma_gamma_log_likelihood_rows(
    p: float, q: float, gamma: float, x: np.ndarray, m: np.ndarray
) -> np.ndarray:
    px = p * x
    return (
        special.gammaln(px + q) - special.gammaln(px) - special.gammaln(q)
        + q * np.log(gamma) + (px - 1) * np.log(m) + px * np.log(x)
        - (px + q) * np.log(x * m + gamma)
    )  # fmt: skip


class _SpendRows:
    """Gamma-Gamma inputs arranged for fast evaluations. Summed over customers, the
    log-likelihood is gamma-function terms of x alone (once per distinct x), two
    sums fixed by the data, and one term that needs every row:
    -(p x + q) log(x m + gamma)."""

    def __init__(self, x: np.ndarray, m: np.ndarray, weights: np.ndarray):
        self.distinct_x, _, self.weight_per_x = per_distinct_x(x, weights)
        self.total = float(weights.sum())
        self.w, self.wx, self.xm = weights, weights * x, x * m
        # sum of w (p x - 1) log m + p x log x  =  p * fixed_p - fixed
        self.fixed_p = float(self.wx @ (np.log(m) + np.log(x)))
        self.fixed = float(weights @ np.log(m))
        self.buffer = np.empty_like(x)


def _gamma_gamma_value_and_gradient(
    params: np.ndarray, rows: _SpendRows
) -> tuple[float, np.ndarray]:
    """Weighted log-likelihood and its gradient in (p, q, gamma)."""
    p, q, gamma = params
    ux, wx, total = rows.distinct_x, rows.weight_per_x, rows.total
    digamma_pxq = special.digamma(p * ux + q)
    log_xm_gamma = np.log(np.add(rows.xm, gamma, out=rows.buffer), out=rows.buffer)
    sum_log, sum_x_log = rows.w @ log_xm_gamma, rows.wx @ log_xm_gamma
    value = (
        wx @ (special.gammaln(p * ux + q) - special.gammaln(p * ux))
        + total * (q * np.log(gamma) - special.gammaln(q))
        + p * rows.fixed_p - rows.fixed - p * sum_x_log - q * sum_log
    )  # fmt: skip
    inverse = np.reciprocal(np.add(rows.xm, gamma, out=rows.buffer), out=rows.buffer)
    gradient = np.array(
        [
            (wx * ux) @ (digamma_pxq - special.digamma(p * ux)) + rows.fixed_p - sum_x_log,
            wx @ digamma_pxq - total * special.digamma(q) + total * np.log(gamma) - sum_log,
            total * q / gamma - p * (rows.wx @ inverse) - q * (rows.w @ inverse),
        ]
    )  # fmt: skip
    return float(value), gradient


def fit_gamma_gamma(x: np.ndarray, m: np.ndarray, weights: np.ndarray | None = None) -> FitResult:
    """Maximum-likelihood Gamma-Gamma fit on repeat buyers (x >= 1, m > 0)."""
    x, m = np.asarray(x, dtype=float), np.asarray(m, dtype=float)
    weights = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float)
    usable = (x > 0) & (m > 0)
    x, m, weights = x[usable], m[usable], weights[usable]
    customers = int(weights.sum())
    if customers < MIN_REPEAT_CUSTOMERS:
        return FitResult(
            {},
            float("nan"),
            False,
            f"only {customers} repeat buyers with positive spend; Gamma-Gamma needs at least "
            f"{MIN_REPEAT_CUSTOMERS}",
            customers,
        )
    scale = float(np.average(m, weights=weights))  # fit in units of the mean order value
    rows = _SpendRows(x, m / scale, weights)

    result, flat = minimize(objective(_gamma_gamma_value_and_gradient, rows), 3)
    p, q, gamma = np.exp(result.x)
    params = {"p": float(p), "q": float(q), "gamma": float(gamma * scale)}
    rows_ll = _gamma_gamma_log_likelihood_rows(params["p"], params["q"], params["gamma"], x, m)
    log_likelihood = float(np.dot(rows_ll, weights))
    problem = "q <= 1: the expected spend is undefined for this fit" if q <= 1 else None
    return judge_fit(result, flat, params, log_likelihood, customers, problem)


def gamma_gamma_expected_spend(
    params: dict[str, float], x: np.ndarray, m: np.ndarray, fallback: float
) -> np.ndarray:
    """E[spend per order | x, m]: shrinks each repeat buyer's mean toward the population
    mean; customers without repeat orders get the population mean (``fallback`` if the
    model has no usable fit)."""
    x, m = np.asarray(x, dtype=float), np.asarray(m, dtype=float)
    if not params:
        return np.where(x > 0, m, fallback)
    p, q, gamma = params["p"], params["q"], params["gamma"]
    population_mean = p * gamma / (q - 1)
    conditional = (p * (gamma + x * m)) / (p * x + q - 1)
    return np.where((x > 0) & (m > 0), conditional, population_mean)
