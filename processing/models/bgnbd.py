"""BG/NBD (Fader, Hardie & Lee 2005, "Counting Your Customers the Easy Way").

Each customer buys at a Poisson rate λ ~ Gamma(r, α) while alive, and drops out
after any purchase with probability p ~ Beta(a, b). Inputs per customer: ``x``
(repeat purchases), ``t_x`` (time of the last purchase since the first) and ``T``
(time since the first purchase), all in one time unit.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from cdp.processing.models._fitting import FitResult, fit_count_model, per_distinct_x

NAMES = ("r", "alpha", "a", "b")


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


class _Rows:
    """BG/NBD inputs arranged for fast likelihood evaluations. The gamma-function
    terms depend on x alone, which takes few distinct values, so they are computed
    once per distinct x and weighted by how many customers share it; customers with
    no repeat purchase (x = 0) contribute through T alone; only repeat buyers need
    the per-row mixture of "still alive" and "dropped out". Each evaluation writes
    into buffers allocated once: allocating fresh arrays per evaluation made the
    fits several times slower (page faults on every large temporary)."""

    def __init__(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray, weights: np.ndarray):
        self.distinct_x, index, self.weight_per_x = per_distinct_x(x, weights)
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


def fit_bgnbd(
    x: np.ndarray, t_x: np.ndarray, T: np.ndarray, weights: np.ndarray | None = None
) -> FitResult:
    """Maximum-likelihood BG/NBD fit; ``weights`` count identical rows."""
    return fit_count_model(
        "BG/NBD", NAMES, ("alpha",), _bgnbd_value_and_gradient, _Rows.of, x, t_x, T, weights
    )


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
