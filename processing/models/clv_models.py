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
from threadpoolctl import ThreadpoolController

# Fewer repeat buyers than this cannot identify the drop-out process (a, b).
MIN_REPEAT_CUSTOMERS = 10
# Fits over more distinct rows than this start from a fit on a sample of them.
WARM_START_ROWS = 20_000

_threadpools: ThreadpoolController | None = None


@dataclass(frozen=True)
class FitResult:
    """Fitted parameters, or why there are none (``converged`` False, ``message``)."""

    params: dict[str, float]
    log_likelihood: float
    converged: bool
    message: str
    customers: int
    iterations: int = 0


def _minimize(
    objective, dimensions: int, start: np.ndarray | None = None
) -> tuple[optimize.OptimizeResult, bool]:
    """L-BFGS-B over log-parameters with the analytic gradient, from ``start`` (all
    parameters 1 by default); converged when that gradient is flat at the optimum.
    L-BFGS-B often ends with "ABNORMAL" when its line search cannot improve at machine
    precision, which at a flat gradient is convergence, not failure.

    BLAS runs on one thread here: the optimizer's dot products are small, and on a
    two-core machine waking OpenBLAS's threads for each cost more than the products
    themselves (the Gamma-Gamma fit of 45k buyers: 0.11 s threaded, 0.02 s not),
    and left them spinning against DuckDB's."""
    global _threadpools
    if _threadpools is None:  # finding the loaded BLAS libraries takes milliseconds: once
        _threadpools = ThreadpoolController()
    with _threadpools.limit(limits=1, user_api="blas"):
        return _minimize_on_one_thread(objective, dimensions, start)


def _minimize_on_one_thread(
    objective, dimensions: int, start: np.ndarray | None
) -> tuple[optimize.OptimizeResult, bool]:
    # ftol 1e-12 and gtol 1e-8 leave the fitted parameters equal to 6 digits; at 1e-13
    # and 1e-9 the BG/NBD fit of 100k buyers took 46 evaluations instead of 17.
    result = optimize.minimize(
        objective,
        x0=np.zeros(dimensions) if start is None else start,
        jac=True,
        method="L-BFGS-B",
        bounds=[(-12.0, 12.0)] * dimensions,
        options={"maxiter": 2000, "ftol": 1e-12, "gtol": 1e-8},
    )
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


def _per_distinct_x(x: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, ...]:
    """The distinct values of x, each row's index into them, and the weight per value:
    both models' gamma-function terms are evaluated once per distinct x."""
    distinct_x, index = np.unique(x, return_inverse=True)
    return distinct_x, index, np.bincount(index, weights=weights, minlength=len(distinct_x))


class _Rows:
    """BG/NBD inputs arranged for fast likelihood evaluations. The gamma-function
    terms depend on x alone, which takes few distinct values, so they are computed
    once per distinct x and weighted by how many customers share it; customers with
    no repeat purchase (x = 0) contribute through T alone; only repeat buyers need
    the per-row mixture of "still alive" and "dropped out". Each evaluation writes
    into buffers allocated once: allocating fresh arrays per evaluation made the
    fits several times slower (page faults on every large temporary)."""

    def __init__(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray, weights: np.ndarray):
        self.distinct_x, index, self.weight_per_x = _per_distinct_x(x, weights)
        repeat = x > 0
        self.T_once, self.w_once = T[~repeat], weights[~repeat]
        self.x, self.t_x, self.T, self.w = x[repeat], t_x[repeat], T[repeat], weights[repeat]
        self.x_index = index[repeat]
        self.buffers = np.empty((6, len(self.x)))

    @classmethod
    def of(cls, x: np.ndarray, t_x: np.ndarray, T: np.ndarray, weights: np.ndarray) -> _Rows:
        return cls(*(np.asarray(v, dtype=float) for v in (x, t_x, T, weights)))


def _bgnbd_value_and_gradient(params: np.ndarray, rows: _Rows) -> tuple[float, np.ndarray]:
    """Weighted log-likelihood (eq. 6) and its gradient in (r, alpha, a, b)."""
    r, alpha, a, b = params
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
    # No repeat purchase: only "still alive", -r log(alpha + T).
    log_alpha_T0 = np.log(alpha + rows.T_once)
    value -= r * (rows.w_once @ log_alpha_T0)
    gradient[0] -= rows.w_once @ log_alpha_T0
    gradient[1] -= r * (rows.w_once @ (1 / (alpha + rows.T_once)))

    # Repeat buyers: log(e^a3 + e^a4) = a3 + softplus(d), d = a4 - a3, where
    # a3 = -(r + x) log(alpha + T) and a4 = log a - log(b + x - 1) - (r + x) log(alpha + t_x).
    x, w = rows.x, rows.w
    r_x, log_alpha_T, log_alpha_tx, d, e, scratch = rows.buffers
    np.add(r, x, out=r_x)
    np.log(np.add(alpha, rows.T, out=log_alpha_T), out=log_alpha_T)
    np.log(np.add(alpha, rows.t_x, out=log_alpha_tx), out=log_alpha_tx)
    inverse_b_x = np.zeros_like(ux)  # 1 / (b + x - 1), per distinct x > 0
    np.divide(1.0, b + ux - 1, out=inverse_b_x, where=ux > 0)
    np.subtract(log_alpha_T, log_alpha_tx, out=d)
    d *= r_x
    d += np.log(a)
    d += np.log(inverse_b_x, out=np.zeros_like(ux), where=ux > 0)[rows.x_index]
    # softplus(d) = max(d, 0) + log1p(e^-|d|); beyond |d| = 50 the log1p term is
    # below 1e-21 (and clipping keeps exp out of slow subnormal numbers).
    np.minimum(np.abs(d, out=e), 50.0, out=e)
    np.exp(np.negative(e, out=e), out=e)
    value += w @ np.log1p(e, out=scratch)
    value += w @ np.maximum(d, 0.0, out=scratch)
    value -= w @ np.multiply(r_x, log_alpha_T, out=scratch)
    # The weight of "dropped out" in each row's mixture, sigmoid(d): e/(1+e) for d < 0,
    # 1/(1+e) otherwise.
    share = np.reciprocal(np.add(e, 1.0, out=scratch), out=scratch)
    np.multiply(e, share, out=e, where=d < 0)
    np.copyto(e, share, where=d >= 0)
    w4 = np.multiply(w, e, out=e)
    w3 = np.subtract(w, w4, out=scratch)
    dropout_per_x = np.bincount(rows.x_index, weights=w4, minlength=len(ux))
    gradient[0] -= w3 @ log_alpha_T + w4 @ log_alpha_tx
    ratio = np.divide(r_x, np.add(alpha, rows.T, out=d), out=d)
    gradient[1] -= w3 @ ratio
    np.divide(r_x, np.add(alpha, rows.t_x, out=d), out=d)
    gradient[1] -= w4 @ ratio
    gradient[2] += w4.sum() / a
    gradient[3] -= dropout_per_x @ inverse_b_x
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


def _objective(value_and_gradient, rows: _Rows | _SpendRows):
    """What the optimizer minimizes: the mean negative log-likelihood over
    log-parameters (so every parameter stays positive), and its gradient."""
    customers = rows.weight_per_x.sum()

    def objective(log_params: np.ndarray) -> tuple[float, np.ndarray]:
        value, gradient = value_and_gradient(np.exp(log_params), rows)
        value = -value / customers
        gradient = -gradient / customers * np.exp(log_params)  # d/d log(theta)
        if not np.isfinite(value) or not np.all(np.isfinite(gradient)):
            return 1e300, np.zeros_like(log_params)
        return value, gradient

    return objective


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
            {},
            float("nan"),
            False,
            f"only {repeaters} repeat buyers (customers who bought more than once); BG/NBD "
            f"needs at least {MIN_REPEAT_CUSTOMERS} to estimate drop-out",
            customers,
        )
    scale = float(T.max()) or 1.0  # fit on a unit time scale: better conditioned
    t_x, T = t_x / scale, T / scale
    start = None
    if len(x) > WARM_START_ROWS:
        # Most of the optimizer's steps are spent far from the optimum: take them on
        # an evenly spaced sample of the rows, then finish on all of them.
        every = slice(None, None, len(x) // (WARM_START_ROWS // 4))
        sample = _Rows.of(x[every], t_x[every], T[every], weights[every])
        start = _minimize(_objective(_bgnbd_value_and_gradient, sample), 4)[0].x
    result, flat = _minimize(
        _objective(_bgnbd_value_and_gradient, _Rows.of(x, t_x, T, weights)), 4, start
    )
    r, alpha, a, b = np.exp(result.x)
    params = {"r": float(r), "alpha": float(alpha * scale), "a": float(a), "b": float(b)}
    # In the data's own time unit: rescaling time by s shifts each customer's
    # log-likelihood by -x log s (alpha scales with it).
    log_likelihood = -float(result.fun) * customers - np.log(scale) * float(weights @ x)
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


class _SpendRows:
    """Gamma-Gamma inputs arranged for fast evaluations. Summed over customers, the
    log-likelihood is gamma-function terms of x alone (once per distinct x), two
    sums fixed by the data, and one term that needs every row:
    -(p x + q) log(x m + gamma)."""

    def __init__(self, x: np.ndarray, m: np.ndarray, weights: np.ndarray):
        self.distinct_x, _, self.weight_per_x = _per_distinct_x(x, weights)
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

    result, flat = _minimize(_objective(_gamma_gamma_value_and_gradient, rows), 3)
    p, q, gamma = np.exp(result.x)
    params = {"p": float(p), "q": float(q), "gamma": float(gamma * scale)}
    rows_ll = _gamma_gamma_log_likelihood_rows(params["p"], params["q"], params["gamma"], x, m)
    log_likelihood = float(np.dot(rows_ll, weights))
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
