"""What the CLV models' maximum-likelihood fits share: the optimizer, how a fit is
judged, and the scaffolding of the three purchase-count models (BG/NBD, MBG/NBD,
Pareto/NBD).

Every model is fitted over *distinct* input rows with counts, so a million
customers cost what their few distinct (x, t_x, T) combinations cost, by L-BFGS-B
over log-parameters with an analytic gradient. Fits that cannot be trusted — no
repeat buyers, too few customers, an optimizer that did not converge, non-finite
results — are reported as such (``FitResult.converged`` False with a ``message``),
and callers fall back to simple empirical rates instead of emitting NaN.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize
from threadpoolctl import ThreadpoolController

# Fewer repeat buyers than this cannot identify the drop-out process.
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


def minimize(
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
        options={"maxiter": 2000, "ftol": 1e-12, "gtol": 1e-8, "maxls": 10},
    )
    _, gradient = objective(result.x)
    flat = bool(np.all(np.isfinite(gradient))) and float(np.max(np.abs(gradient))) < 1e-4
    return result, flat


def judge_fit(
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


def per_distinct_x(x: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, ...]:
    """The distinct values of x, each row's index into them, and the weight per value:
    both models' gamma-function terms are evaluated once per distinct x."""
    distinct_x, index = np.unique(x, return_inverse=True)
    return distinct_x, index, np.bincount(index, weights=weights, minlength=len(distinct_x))


def objective(value_and_gradient, rows: Any):
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


ValueAndGradient = Callable[[np.ndarray, Any], tuple[float, np.ndarray]]


def fit_count_model(
    name: str,
    names: tuple[str, ...],
    time_scaled: tuple[str, ...],
    value_and_gradient: ValueAndGradient,
    make_rows: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], Any],
    x: np.ndarray,
    t_x: np.ndarray,
    T: np.ndarray,
    weights: np.ndarray | None,
) -> FitResult:
    """Fit a purchase-count model ``name`` with parameters ``names`` (those in
    ``time_scaled`` are rates' scales, in the data's time unit) by maximum likelihood.

    Shared by BG/NBD, MBG/NBD and Pareto/NBD: the same refusal of data without enough
    repeat buyers, the fit on a unit time scale (better conditioned), the warm start
    from a sample when there are many distinct rows, and the log-likelihood reported
    in the data's own time unit."""
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
            f"only {repeaters} repeat buyers (customers who bought more than once); {name} "
            f"needs at least {MIN_REPEAT_CUSTOMERS} to estimate drop-out",
            customers,
        )
    scale = float(T.max()) or 1.0
    t_x, T = t_x / scale, T / scale
    dimensions = len(names)
    start = None
    if len(x) > WARM_START_ROWS:
        # Most of the optimizer's steps are spent far from the optimum: take them on
        # an evenly spaced sample of the rows, then finish on all of them.
        every = slice(None, None, len(x) // (WARM_START_ROWS // 4))
        sample = make_rows(x[every], t_x[every], T[every], weights[every])
        start = minimize(objective(value_and_gradient, sample), dimensions)[0].x
    result, flat = minimize(
        objective(value_and_gradient, make_rows(x, t_x, T, weights)), dimensions, start
    )
    fitted = np.exp(result.x)
    params = {
        key: float(value * scale if key in time_scaled else value)
        for key, value in zip(names, fitted, strict=True)
    }
    # In the data's own time unit: rescaling time by s shifts each customer's
    # log-likelihood by -x log s (the time-scale parameters scale with it).
    log_likelihood = -float(result.fun) * customers - np.log(scale) * float(weights @ x)
    return judge_fit(result, flat, params, log_likelihood, customers)


def weighted_log_likelihood(
    value_and_gradient: ValueAndGradient,
    make_rows: Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], Any],
    names: tuple[str, ...],
    params: dict[str, float],
    x: np.ndarray,
    t_x: np.ndarray,
    T: np.ndarray,
    weights: np.ndarray | None,
) -> float:
    """A count model's log-likelihood at ``params``, through the very function its fit
    maximizes (so tests of one hold for the other)."""
    x, t_x, T = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (x, t_x, T))
    weights = np.ones_like(x) if weights is None else np.asarray(weights, dtype=float)
    point = np.array([params[name] for name in names])
    return value_and_gradient(point, make_rows(x, t_x, T, weights))[0]
