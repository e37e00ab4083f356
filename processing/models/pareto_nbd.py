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
singularity within c·π of the real axis. Gauss-Legendre with 8, 16 or 32 nodes (by
the length of that range) then agrees with 30-digit quadrature to ~1e-12 in log in
ordinary corners and ~2e-7 in extreme ones (x = 150, scales 1e-4 of T;
tests/processing/models), and the gradient is the same quadrature of the
integrand's derivatives, so L-BFGS-B sees a value and a gradient that agree.
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
# Gauss-Legendre rules, by the number of nodes a row needs (see _Integral): most rows
# need few, and the integral is most of a fit's time.
_RULES = tuple((nodes, *np.polynomial.legendre.leggauss(nodes)) for nodes in (8, 16, 32))
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


class _Integral:
    """log(I β^s) per row (−inf when t_x = T), and for the gradient the
    integrand-weighted means over [t_x, T] of log(α+τ), 1/(α+τ), log(β+τ) and 1/(β+τ).

    I times β^s, because the likelihood's β^s and I's (β+τ)^-(s+1) nearly cancel when
    s is large: summed over rows separately they are ~1e11 each, and their difference
    kept only 4 decimals (noise the optimizer then chased)."""

    def __init__(self, params: np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray):
        r, alpha, s, beta = params
        # The substitution absorbs the factor that falls faster at t_x: (α+τ)^-(r+x)
        # ("low" = α) or (β+τ)^-(s+1) ("low" = β); the other is left as R^k, R =
        # (low+τ)/(other+τ). Taking the faster one keeps R^k gentle, also when s is
        # huge (lifetimes exponential with rate s/β: a ridge fits can run along).
        self.beta_is_low = (s + 1) / (beta + t_x) > (r + x) / (alpha + t_x)
        low = np.where(self.beta_is_low, beta, alpha)
        other = np.where(self.beta_is_low, alpha, beta)
        power = np.where(self.beta_is_low, r + x, s + 1)  # k, the power of (other + τ)
        c = r + s + x
        log_start = np.log(low + t_x)
        span = np.log(low + T) - log_start  # L >= 0
        # The integrand in y is e^y · R^k, and R^k lies between its value at y = 0 and 1
        # (τ → ∞): below y = log(1e-17) − |k log R(t_x)| the rest of the range adds under
        # 1e-17 of the integral. Cutting it there keeps the range (and so e^y's
        # variation over it) short enough for the nodes.
        log_r0 = log_start - np.log(other + t_x)
        floor = _LOG_NEGLIGIBLE - np.abs(power * log_r0)
        span_y = np.minimum(c * span, -floor)  # the range of y, [-span_y, 0]
        # Nodes a row needs for ~1e-14: e^y over a range S takes about S/2 + 8; and
        # R^k's singularity (τ = −other) must lie outside the Bernstein ellipse ρ with
        # ρ^-2n <= 1e-14. For low < other it is c·π off the axis (d = c·π / (S/2),
        # ρ = d + sqrt(1 + d²)); for low > other on the axis, beyond y = 0 by
        # c·log((low+t_x)/(low−other)) (a = 1 + that / (S/2), ρ = a + sqrt(a² − 1)).
        # Rows needing more than 32 (extreme data) get 32.
        with np.errstate(divide="ignore", invalid="ignore"):
            half = span_y / 2
            d = np.pi * c / half
            beyond = c * (log_start - np.log(np.maximum(low - other, 1e-300)))
            a = 1 + beyond / half
            rho = np.where(low < other, d + np.sqrt(1 + d * d), a + np.sqrt(a * a - 1))
            needed = np.maximum(half + 8, 16.1 / np.log(rho))
        # −c log(low + t_x) + s log β, without the cancellation when low = β.
        base = np.where(
            self.beta_is_low,
            -(r + x) * np.log(beta + t_x) - s * np.log1p(t_x / beta),
            -c * log_start + s * np.log(beta),
        )
        self.log_i = np.full_like(x, -np.inf)
        self.means = np.zeros((4, len(x)))
        taken = span <= 0  # t_x = T: no time to die in
        for nodes, z, w in _RULES:
            rows = ~taken & ((needed <= nodes) | (nodes == _RULES[-1][0]))
            taken |= rows
            if rows.any():
                self._integrate(rows, z, w, low, other, power, c, t_x, log_start, span_y, base)

    def _integrate(self, rows, z, w, low, other, power, c, t_x, log_start, span_y, base) -> None:
        low, other, power, c = low[rows], other[rows], power[rows], c[rows]
        t_x, log_start, span_y = t_x[rows], log_start[rows], span_y[rows]
        y = -span_y[:, None] * ((1.0 - z) / 2.0)  # nodes on [-span_y, 0]
        step = -y / c[:, None]  # log((low+τ)/(low+t_x))
        log_low_tau = log_start[:, None] + step  # log(low + τ)
        tau = (low + t_x)[:, None] * np.expm1(step) + t_x[:, None]  # no cancellation
        log_other_tau = np.log(other[:, None] + tau)  # log(other + τ)
        log_terms = y + power[:, None] * (log_low_tau - log_other_tau) + np.log(w / 2.0)
        peak = log_terms.max(axis=1)
        weights = np.exp(log_terms - peak[:, None])
        total = weights.sum(axis=1)
        self.log_i[rows] = peak + np.log(total) + np.log(span_y) - np.log(c) + base[rows]
        mean_log_low = (weights * log_low_tau).sum(axis=1) / total
        mean_inv_low = (weights * np.exp(-log_low_tau)).sum(axis=1) / total
        mean_log_other = (weights * log_other_tau).sum(axis=1) / total
        mean_inv_other = (weights * np.exp(-log_other_tau)).sum(axis=1) / total
        beta_low = self.beta_is_low[rows]
        self.means[:, rows] = np.stack(
            [
                np.where(beta_low, mean_log_other, mean_log_low),  # log(α+τ)
                np.where(beta_low, mean_inv_other, mean_inv_low),  # 1/(α+τ)
                np.where(beta_low, mean_log_low, mean_log_other),  # log(β+τ)
                np.where(beta_low, mean_inv_low, mean_inv_other),  # 1/(β+τ)
            ]
        )


def _log_integral(
    r: float, alpha: float, s: float, beta: float, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """log I per row (for the tests)."""
    return _Integral(np.array([r, alpha, s, beta]), x, t_x, T).log_i - s * np.log(beta)


def _terms(params: np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray):
    """Per row: log of β^s [alive term + s·I], the alive term's share of it, and the
    integral's means for the gradient."""
    r, alpha, s, beta = params
    log_alive = -(r + x) * np.log(alpha + T) - s * np.log1p(T / beta)  # times β^s
    integral = _Integral(params, x, t_x, T)
    log_died = np.log(s) + integral.log_i
    log_bracket = np.logaddexp(log_alive, log_died)
    alive_share = np.exp(log_alive - log_bracket)
    return log_bracket, alive_share, integral.means


def _value_and_gradient(params: np.ndarray, rows: _Rows) -> tuple[float, np.ndarray]:
    """Weighted log-likelihood and its gradient in (r, alpha, s, beta)."""
    r, alpha, s, beta = params
    ux, wx = rows.distinct_x, rows.weight_per_x
    total = wx.sum()
    x, t_x, T, w = rows.x, rows.t_x, rows.T, rows.w
    log_bracket, alive, means = _terms(params, x, t_x, T)
    died = 1.0 - alive
    value = (
        wx @ special.gammaln(r + ux)
        + total * (r * np.log(alpha) - special.gammaln(r))  # (β^s is in log_bracket)
        + w @ log_bracket
    )
    # d log(bracket) = alive · d log(alive term) + died · d log(s I), with
    # d log I = the share-weighted mean of the integrand's log-derivative at the nodes.
    mean_log_alpha_tau, mean_inv_alpha_tau, mean_log_beta_tau, mean_inv_beta_tau = means
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
    _, alive, _ = _terms(np.array([params[name] for name in NAMES]), x, t_x, T)
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
