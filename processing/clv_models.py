"""Predictive CLV: BG/NBD for repeat purchases and Gamma-Gamma for spend per order.

BG/NBD (Fader, Hardie & Lee 2005, "Counting Your Customers the Easy Way") models
each customer as buying at a Poisson rate λ ~ Gamma(r, α) while alive, and dropping
out after any purchase with probability p ~ Beta(a, b). It needs, per customer,
``x`` (repeat purchases), ``t_x`` (time of the last purchase since the first) and
``T`` (time since the first purchase), all in one time unit.

Gamma-Gamma (Fader, Hardie & Lee 2005, "RFM and CLV: Using Iso-Value Curves") models
the value of each repeat order as Gamma(p, ν) with ν ~ Gamma(q, γ) across customers,
fitted on customers with at least one repeat purchase and their mean repeat-order
value ``m``.

Both are fitted by maximum likelihood over *distinct* input rows with counts, so a
million customers cost what their few distinct (x, t_x, T) combinations cost. Fits
that cannot be trusted — no repeat buyers, too few customers, an optimizer that
did not converge, non-finite results — are reported as such, and the predictions
fall back to simple empirical rates instead of emitting NaN: see ``FitResult``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, special

# Fewer repeat buyers than this cannot identify the drop-out process (a, b).
MIN_REPEAT_CUSTOMERS = 10


@dataclass(frozen=True)
class FitResult:
    """Fitted parameters, or why there are none (``converged`` False, ``message``)."""

    params: dict[str, float]
    log_likelihood: float
    converged: bool
    message: str
    customers: int
    iterations: int = 0


def _minimize(objective, dimensions: int) -> tuple[optimize.OptimizeResult, bool]:
    """L-BFGS-B over log-parameters with the analytic gradient; converged when that
    gradient is flat at the optimum. L-BFGS-B often ends with "ABNORMAL" when its
    line search cannot improve at machine precision, which at a flat gradient is
    convergence, not failure."""
    result = optimize.minimize(
        objective, x0=np.zeros(dimensions), jac=True, method="L-BFGS-B",
        bounds=[(-12.0, 12.0)] * dimensions,
        options={"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-9},
    )  # fmt: skip
    _, gradient = objective(result.x)
    flat = bool(np.all(np.isfinite(gradient))) and float(np.max(np.abs(gradient))) < 1e-4
    return result, flat


def _fit_result(
    result: optimize.OptimizeResult,
    flat: bool,
    params: dict[str, float],
    log_likelihood: float,
    customers: int,
    problem: str | None = None,
) -> FitResult:
    """Judge a fit: converged only with a flat gradient, a finite likelihood, no
    parameter at its bound and no model-specific ``problem``; else say why."""
    at_bound = bool(np.any(np.abs(result.x) >= 11.99))
    converged = bool(flat and np.isfinite(log_likelihood) and not at_bound and problem is None)
    if converged:
        message = "converged"
    elif problem is not None:
        message = problem
    elif at_bound:
        message = "a parameter ran to its bound: the data do not identify the model"
    else:
        message = f"optimizer did not converge: {result.message}"
    return FitResult(params, log_likelihood, converged, message, customers, int(result.nit))


# -- BG/NBD ---------------------------------------------------------------------------


def _bgnbd_log_likelihood_rows(
    r: float, alpha: float, a: float, b: float, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """Per-row log-likelihood (Fader, Hardie & Lee 2005, eq. 6, in log form)."""
    a1 = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
    a2 = (
        special.gammaln(a + b)
        + special.gammaln(b + x)
        - special.gammaln(b)
        - special.gammaln(a + b + x)
    )
    a3 = -(r + x) * np.log(alpha + T)
    repeat = x > 0
    # For x = 0 the second term is absent; b + x - 1 may be <= 0 there, so guard it.
    safe = np.where(repeat, b + x - 1, 1.0)
    a4 = np.where(repeat, np.log(a) - np.log(safe) - (r + x) * np.log(alpha + t_x), -np.inf)
    return a1 + a2 + np.logaddexp(a3, a4)


@dataclass(frozen=True)
class _Rows:
    """Model inputs with the repeat counts factored out: the expensive gamma-function
    terms depend on x alone, which takes few distinct values, so they are computed
    once per distinct x and weighted by how many customers share it."""

    x: np.ndarray
    t_x: np.ndarray
    T: np.ndarray
    weights: np.ndarray
    distinct_x: np.ndarray
    weight_per_x: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray, t_x: np.ndarray, T: np.ndarray, weights: np.ndarray) -> _Rows:
        distinct_x, index = np.unique(x, return_inverse=True)
        return cls(x, t_x, T, weights, distinct_x, np.bincount(index, weights=weights))


def _bgnbd_value_and_gradient(params: np.ndarray, rows: _Rows) -> tuple[float, np.ndarray]:
    """Weighted log-likelihood and its gradient in (r, alpha, a, b)."""
    r, alpha, a, b = params
    x, t_x, T, w = rows.x, rows.t_x, rows.T, rows.weights
    ux, wx = rows.distinct_x, rows.weight_per_x
    total = wx.sum()
    # Terms of x alone (eq. 6's A1 and A2), once per distinct x.
    value = (
        wx @ (special.gammaln(r + ux) + special.gammaln(b + ux) - special.gammaln(a + b + ux))
        + total * (r * np.log(alpha) - special.gammaln(r))
        + total * (special.gammaln(a + b) - special.gammaln(b))
    )  # fmt: skip
    digamma_abx = wx @ special.digamma(a + b + ux)
    gradient = np.array(
        [
            wx @ special.digamma(r + ux) + total * (np.log(alpha) - special.digamma(r)),
            total * r / alpha,
            total * special.digamma(a + b) - digamma_abx,
            wx @ special.digamma(b + ux) + total * (special.digamma(a + b) - special.digamma(b))
            - digamma_abx,
        ]
    )  # fmt: skip
    # The mixture of "still alive" and "dropped out after the last purchase", per row.
    repeat = x > 0
    safe = np.where(repeat, b + x - 1, 1.0)
    log_alpha_T, log_alpha_tx = np.log(alpha + T), np.log(alpha + t_x)
    a3 = -(r + x) * log_alpha_T
    a4 = np.where(repeat, np.log(a) - np.log(safe) - (r + x) * log_alpha_tx, -np.inf)
    # log(e^a3 + e^a4) shifted by the larger term (np.logaddexp is ~10x slower here).
    top = np.maximum(a3, a4)
    e3, e4 = np.exp(a3 - top), np.exp(a4 - top)
    sum_e = e3 + e4
    mix = top + np.log(sum_e)
    w3, w4 = w * e3 / sum_e, w * e4 / sum_e  # weighted shares of the two terms
    value += w @ mix
    gradient += np.array(
        [
            -(w3 @ log_alpha_T) - w4 @ log_alpha_tx,
            -(w3 @ ((r + x) / (alpha + T))) - w4 @ ((r + x) / (alpha + t_x)),
            w4.sum() / a,
            -(w4 @ (1 / safe)),
        ]
    )  # fmt: skip
    return float(value), gradient


def bgnbd_log_likelihood(
    params: dict[str, float],
    x: np.ndarray,
    t_x: np.ndarray,
    T: np.ndarray,
    weights: np.ndarray | None = None,
) -> float:
    rows = _bgnbd_log_likelihood_rows(
        params["r"], params["alpha"], params["a"], params["b"], x, t_x, T
    )
    return float(np.sum(rows if weights is None else rows * weights))


def fit_bgnbd(
    x: np.ndarray, t_x: np.ndarray, T: np.ndarray, weights: np.ndarray | None = None
) -> FitResult:
    """Maximum-likelihood BG/NBD fit; ``weights`` count identical rows."""
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    weights = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float)
    customers = int(weights.sum())
    repeaters = int(weights[x > 0].sum())
    if customers == 0:
        return FitResult({}, float("nan"), False, "no customers", 0)
    if repeaters < MIN_REPEAT_CUSTOMERS:
        return FitResult(
            {}, float("nan"), False,
            f"only {repeaters} repeat buyers (customers who bought more than once); BG/NBD "
            f"needs at least {MIN_REPEAT_CUSTOMERS} to estimate drop-out",
            customers,
        )  # fmt: skip
    scale = float(T.max()) or 1.0  # fit on a unit time scale: better conditioned

    rows = _Rows.of(x, t_x / scale, T / scale, weights)

    def objective(log_params: np.ndarray) -> tuple[float, np.ndarray]:
        value, gradient = _bgnbd_value_and_gradient(np.exp(log_params), rows)
        value = -value / customers
        gradient = -gradient / customers * np.exp(log_params)  # d/d log(theta)
        if not np.isfinite(value) or not np.all(np.isfinite(gradient)):
            return 1e300, np.zeros(4)
        return value, gradient

    result, flat = _minimize(objective, 4)
    r, alpha, a, b = np.exp(result.x)
    params = {"r": float(r), "alpha": float(alpha * scale), "a": float(a), "b": float(b)}
    log_likelihood = bgnbd_log_likelihood(params, x, t_x, T, weights)
    return _fit_result(result, flat, params, log_likelihood, customers)


def bgnbd_probability_alive(
    params: dict[str, float], x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """P(still active | x, t_x, T); 1 for customers who never bought again (eq. 8)."""
    r, alpha, a, b = params["r"], params["alpha"], params["a"], params["b"]
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    safe = np.where(x > 0, b + x - 1, 1.0)
    log_ratio = np.log(a) - np.log(safe) + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
    return np.where(x > 0, special.expit(-log_ratio), 1.0)


def bgnbd_expected_purchases(
    params: dict[str, float], t: float, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """Expected purchases in the next ``t`` time units given the history (eq. 10)."""
    r, alpha, a, b = params["r"], params["alpha"], params["a"], params["b"]
    x, t_x, T = (np.asarray(v, dtype=float) for v in (x, t_x, T))
    hyp = special.hyp2f1(r + x, b + x, a + b + x - 1, t / (alpha + T + t))
    first = (a + b + x - 1) / (a - 1) * (1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp)
    return first * bgnbd_probability_alive(params, x, t_x, T)


# -- Gamma-Gamma ----------------------------------------------------------------------


def _gamma_gamma_log_likelihood_rows(
    p: float, q: float, gamma: float, x: np.ndarray, m: np.ndarray
) -> np.ndarray:
    px = p * x
    return (
        special.gammaln(px + q) - special.gammaln(px) - special.gammaln(q)
        + q * np.log(gamma) + (px - 1) * np.log(m) + px * np.log(x)
        - (px + q) * np.log(x * m + gamma)
    )  # fmt: skip


def _gamma_gamma_gradient(
    p: float, q: float, gamma: float, x: np.ndarray, m: np.ndarray
) -> np.ndarray:
    """Per-row gradient of the Gamma-Gamma log-likelihood in (p, q, gamma)."""
    px = p * x
    digamma_pxq, log_xm_gamma = special.digamma(px + q), np.log(x * m + gamma)
    return np.stack(
        [
            x * (digamma_pxq - special.digamma(px) + np.log(m) + np.log(x) - log_xm_gamma),
            digamma_pxq - special.digamma(q) + np.log(gamma) - log_xm_gamma,
            q / gamma - (px + q) / (x * m + gamma),
        ]
    )


def fit_gamma_gamma(x: np.ndarray, m: np.ndarray, weights: np.ndarray | None = None) -> FitResult:
    """Maximum-likelihood Gamma-Gamma fit on repeat buyers (x >= 1, m > 0)."""
    x, m = np.asarray(x, dtype=float), np.asarray(m, dtype=float)
    weights = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float)
    usable = (x > 0) & (m > 0)
    x, m, weights = x[usable], m[usable], weights[usable]
    customers = int(weights.sum())
    if customers < MIN_REPEAT_CUSTOMERS:
        return FitResult(
            {}, float("nan"), False,
            f"only {customers} repeat buyers with positive spend; Gamma-Gamma needs at least "
            f"{MIN_REPEAT_CUSTOMERS}",
            customers,
        )  # fmt: skip
    scale = float(np.average(m, weights=weights))  # fit in units of the mean order value

    m_scaled = m / scale

    def objective(log_params: np.ndarray) -> tuple[float, np.ndarray]:
        p, q, gamma = np.exp(log_params)
        rows = _gamma_gamma_log_likelihood_rows(p, q, gamma, x, m_scaled)
        value = -float(np.dot(rows, weights)) / customers
        gradient = -(_gamma_gamma_gradient(p, q, gamma, x, m_scaled) @ weights) / customers
        gradient = gradient * np.exp(log_params)  # d/d log(theta)
        if not np.isfinite(value) or not np.all(np.isfinite(gradient)):
            return 1e300, np.zeros(3)
        return value, gradient

    result, flat = _minimize(objective, 3)
    p, q, gamma = np.exp(result.x)
    params = {"p": float(p), "q": float(q), "gamma": float(gamma * scale)}
    rows = _gamma_gamma_log_likelihood_rows(params["p"], params["q"], params["gamma"], x, m)
    log_likelihood = float(np.dot(rows, weights))
    problem = "q <= 1: the expected spend is undefined for this fit" if q <= 1 else None
    return _fit_result(result, flat, params, log_likelihood, customers, problem)


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


# -- CLV ------------------------------------------------------------------------------


def discounted_clv(
    bgnbd: dict[str, float],
    spend_per_order: np.ndarray,
    x: np.ndarray,
    t_x: np.ndarray,
    T: np.ndarray,
    *,
    months: int,
    units_per_month: float,
    annual_discount_rate: float,
) -> np.ndarray:
    """Sum over each future month of expected purchases in that month × expected
    spend, discounted monthly at the rate equivalent to ``annual_discount_rate``."""
    monthly_rate = (1 + annual_discount_rate) ** (1 / 12) - 1
    total = np.zeros(np.shape(x), dtype=float)
    previous = np.zeros_like(total)
    for month in range(1, months + 1):
        cumulative = bgnbd_expected_purchases(bgnbd, month * units_per_month, x, t_x, T)
        total += (cumulative - previous) * spend_per_order / (1 + monthly_rate) ** month
        previous = cumulative
    return total
