"""Pareto/NBD (Schmittlein, Morrison & Colombo 1987), the model BG/NBD simplifies.

Each customer buys at a Poisson rate λ ~ Gamma(r, α) while alive and dies after an
exponential lifetime with rate μ ~ Gamma(s, β), at any moment, not only after a
purchase. Per customer, with ``x``, ``t_x`` and ``T`` as for BG/NBD, the likelihood is
(Fader & Hardie, "A Note on Deriving the Pareto/NBD Model and Related Expressions")

    L = Γ(r+x) α^r β^s / Γ(r) · [ (α+T)^-(r+x) (β+T)^-s + s·I ],
    I = ∫_{t_x}^{T} (α+τ)^-(r+x) (β+τ)^-(s+1) dτ,

the second term being "died at τ, between the last purchase and now". The usual
implementations write ``I`` with the Gauss hypergeometric function 2F1, which
scipy's ``hyp2f1`` evaluates inaccurately for some arguments (c − a − b near an
integer, z near 1), and whose derivatives in r and s have no closed form. Here ``I``
is integrated numerically after a change of variable that makes it smooth: with
μ the smaller of α and β and c = r + s + x, u = (μ+τ)^-c absorbs the power, and
y = log(u / u(t_x)) maps [t_x, T] onto [−c·log((μ+T)/(μ+t_x)), 0], where the
integrand e^y · ((μ+τ)/(o+τ))^k (o the other scale, k its exponent) has no
singularity within c·π of the real axis. Gauss-Legendre on ``NODES`` points then
agrees with 30-digit quadrature to ~1e-12 (tests/processing/models), and the
gradient is the same quadrature of the integrand's derivatives, so L-BFGS-B sees a
value and a gradient that agree.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from cdp.processing.models._fitting import (
    FitResult,
    fit_count_model,
    per_distinct_x,
    weighted_log_likelihood,
)

NAMES = ("r", "alpha", "s", "beta")
NODES = 32
_Z, _W = np.polynomial.legendre.leggauss(NODES)
_LOG_NEGLIGIBLE = np.log(1e-17)


class _Rows:
    """Pareto/NBD inputs: every row needs the integral (x = 0 too: died before now),
    the gamma-function terms only once per distinct x."""

    def __init__(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray, weights: np.ndarray):
        self.distinct_x, _, self.weight_per_x = per_distinct_x(x, weights)
        self.x, self.t_x, self.T, self.w = x, t_x, T, weights

    @classmethod
    def of(cls, x: np.ndarray, t_x: np.ndarray, T: np.ndarray, weights: np.ndarray) -> _Rows:
        return cls(*(np.asarray(v, dtype=float) for v in (x, t_x, T, weights)))


def _log_integral(
    r: float, alpha: float, s: float, beta: float, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """log I per row (−inf when t_x = T), and the nodes τ (rows × NODES) with each
    node's share of I, for the gradient's integrals."""
    if alpha <= beta:
        low, other, power = alpha, beta, s + 1  # power: the exponent of (other + τ)
    else:
        low, other, power = beta, alpha, r + x
    c = r + s + x
    log_start = np.log(low + t_x)
    span = np.log(low + T) - log_start  # L >= 0
    # The integrand in y is e^y · R^k with R = (low+τ)/(other+τ) <= 1, R^k >= its value
    # at y = 0: below y = log(1e-17) + k log R(t_x) the rest of the range adds less
    # than 1e-17 of the integral. Cutting it there keeps the range (and so e^y's
    # variation over it) short enough for the nodes.
    floor = _LOG_NEGLIGIBLE + power * (log_start - np.log(other + t_x))
    span_y = np.minimum(c * span, -floor)  # the range of y, [-span_y, 0]
    half = (1.0 - _Z) / 2.0  # nodes at y = -span_y (1 - z) / 2
    y = -span_y[:, None] * half
    log_low_tau = log_start[:, None] - y / np.asarray(c)[..., None]  # log(low + τ)
    tau = np.exp(log_low_tau) - low
    log_terms = (
        y + np.asarray(power)[..., None] * (log_low_tau - np.log(other + tau)) + np.log(_W / 2.0)
    )
    peak = log_terms.max(axis=1, keepdims=True)
    shares = np.exp(log_terms - peak)
    total = shares.sum(axis=1)
    shares /= total[:, None]
    with np.errstate(divide="ignore"):
        log_i = peak[:, 0] + np.log(total) + np.log(span_y) - np.log(c) - c * log_start
    return np.where(span > 0, log_i, -np.inf), tau, shares


def _terms(params: np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray):
    """Per row: log of the bracket [alive term + s·I], the alive term's share of it,
    and the nodes for the gradient."""
    r, alpha, s, beta = params
    log_alive = -(r + x) * np.log(alpha + T) - s * np.log(beta + T)
    log_i, tau, shares = _log_integral(r, alpha, s, beta, x, t_x, T)
    log_died = np.log(s) + log_i
    log_bracket = np.logaddexp(log_alive, log_died)
    alive_share = np.exp(log_alive - log_bracket)
    return log_bracket, alive_share, tau, shares


def _value_and_gradient(params: np.ndarray, rows: _Rows) -> tuple[float, np.ndarray]:
    """Weighted log-likelihood and its gradient in (r, alpha, s, beta)."""
    r, alpha, s, beta = params
    ux, wx = rows.distinct_x, rows.weight_per_x
    total = wx.sum()
    x, t_x, T, w = rows.x, rows.t_x, rows.T, rows.w
    log_bracket, alive, tau, shares = _terms(params, x, t_x, T)
    died = 1.0 - alive
    value = (
        wx @ special.gammaln(r + ux)
        + total * (r * np.log(alpha) + s * np.log(beta) - special.gammaln(r))
        + w @ log_bracket
    )
    # d log(bracket) = alive · d log(alive term) + died · d log(s I), with
    # d log I = the share-weighted mean of the integrand's log-derivative at the nodes.
    mean_log_alpha_tau = np.sum(shares * np.log(alpha + tau), axis=1)
    mean_inv_alpha_tau = np.sum(shares / (alpha + tau), axis=1)
    mean_log_beta_tau = np.sum(shares * np.log(beta + tau), axis=1)
    mean_inv_beta_tau = np.sum(shares / (beta + tau), axis=1)
    gradient = np.array(
        [
            wx @ special.digamma(r + ux)
            + total * (np.log(alpha) - special.digamma(r))
            - w @ (alive * np.log(alpha + T) + died * mean_log_alpha_tau),
            total * r / alpha - w @ ((r + x) * (alive / (alpha + T) + died * mean_inv_alpha_tau)),
            total * np.log(beta)
            - w @ (alive * np.log(beta + T) + died * (mean_log_beta_tau - 1.0 / s)),
            total * s / beta - w @ (alive * s / (beta + T) + died * (s + 1) * mean_inv_beta_tau),
        ]
    )
    return float(value), gradient


def pareto_nbd_log_likelihood(
    params: dict[str, float],
    x: np.ndarray,
    t_x: np.ndarray,
    T: np.ndarray,
    weights: np.ndarray | None = None,
) -> float:
    return weighted_log_likelihood(_value_and_gradient, _Rows.of, NAMES, params, x, t_x, T, weights)


def fit_pareto_nbd(
    x: np.ndarray, t_x: np.ndarray, T: np.ndarray, weights: np.ndarray | None = None
) -> FitResult:
    """Maximum-likelihood Pareto/NBD fit; ``weights`` count identical rows."""
    return fit_count_model(
        "Pareto/NBD", NAMES, ("alpha", "beta"), _value_and_gradient, _Rows.of, x, t_x, T, weights
    )


def pareto_nbd_probability_alive(
    params: dict[str, float], x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """P(still alive | x, t_x, T): the alive term's share of the likelihood."""
    x, t_x, T = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (x, t_x, T))
    _, alive, _, _ = _terms(np.array([params[name] for name in NAMES]), x, t_x, T)
    return alive


def pareto_nbd_expected_purchases(
    params: dict[str, float], t: float, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """Expected purchases in the next ``t`` time units given the history: P(alive)
    × (r+x)(β+T) / ((α+T)(s−1)) × [1 − ((β+T)/(β+T+t))^(s−1)] (log form at s = 1)."""
    r, alpha, s, beta = (params[name] for name in NAMES)
    x, t_x, T = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (x, t_x, T))
    ratio = np.log(beta + T) - np.log(beta + T + t)  # log((β+T)/(β+T+t)) <= 0
    # (1 - e^{(s-1) ratio}) / (s - 1) -> -ratio as s -> 1.
    horizon = -np.expm1((s - 1) * ratio) / (s - 1) if abs(s - 1) > 1e-9 else -ratio
    rate = (r + x) * (beta + T) / (alpha + T)
    return pareto_nbd_probability_alive(params, x, t_x, T) * rate * horizon
