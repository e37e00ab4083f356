"""MBG/NBD (Batislam, Denizel & Filiztekin 2007, "Empirical validation and comparison
of models for customer base analysis").

BG/NBD with one change: a customer may also drop out right after the first
purchase, not only after repeat ones (drop-out opportunities are x + 1, not x). So
a customer who never bought again is no longer certainly alive, which BG/NBD says
they are. Per customer, with ``x``, ``t_x`` and ``T`` as for BG/NBD:

    L = B(a, b+x+1)/B(a, b) · Γ(r+x) α^r / Γ(r) ·
        [ (α+T)^-(r+x) + a/(b+x) · (α+t_x)^-(r+x) ]
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

NAMES = ("r", "alpha", "a", "b")


class _Rows:
    """MBG/NBD inputs: gamma-function terms once per distinct x, the mixture of
    "alive" and "dropped out after the last purchase" per row (x = 0 included)."""

    def __init__(self, x: np.ndarray, t_x: np.ndarray, T: np.ndarray, weights: np.ndarray):
        self.distinct_x, self.x_index, self.weight_per_x = per_distinct_x(x, weights)
        self.x, self.t_x, self.T, self.w = x, t_x, T, weights

    @classmethod
    def of(cls, x: np.ndarray, t_x: np.ndarray, T: np.ndarray, weights: np.ndarray) -> _Rows:
        return cls(*(np.asarray(v, dtype=float) for v in (x, t_x, T, weights)))


def _log_odds_dropped(params: np.ndarray, x, t_x, T) -> np.ndarray:
    """log of (dropped-out term / alive term): log a − log(b+x) + (r+x) log((α+T)/(α+t_x))."""
    r, alpha, a, b = params
    return np.log(a) - np.log(b + x) + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))


def _value_and_gradient(params: np.ndarray, rows: _Rows) -> tuple[float, np.ndarray]:
    """Weighted log-likelihood and its gradient in (r, alpha, a, b)."""
    r, alpha, a, b = params
    ux, wx = rows.distinct_x, rows.weight_per_x
    total = wx.sum()
    x, t_x, T, w = rows.x, rows.t_x, rows.T, rows.w
    log_alpha_T, log_alpha_tx = np.log(alpha + T), np.log(alpha + t_x)
    d = _log_odds_dropped(params, x, t_x, T)
    dropped = special.expit(d)  # the "dropped out" share of each row's mixture
    per_x = special.gammaln(r + ux) + special.gammaln(b + ux + 1) - special.gammaln(a + b + ux + 1)
    value = (
        wx @ per_x
        + total * (r * np.log(alpha) - special.gammaln(r))
        + total * (special.gammaln(a + b) - special.gammaln(b))
        + w @ (np.logaddexp(d, 0.0) - (r + x) * log_alpha_T)
    )
    digamma_abx = wx @ special.digamma(a + b + ux + 1)
    dropped_per_x = np.bincount(rows.x_index, weights=w * dropped, minlength=len(ux))
    gradient = np.array(
        [
            wx @ special.digamma(r + ux) + total * (np.log(alpha) - special.digamma(r))
            - w @ (log_alpha_T - dropped * (log_alpha_T - log_alpha_tx)),
            total * r / alpha
            - w @ ((r + x) * (1 / (alpha + T) - dropped * (1 / (alpha + T) - 1 / (alpha + t_x)))),
            total * special.digamma(a + b) - digamma_abx + (w @ dropped) / a,
            wx @ special.digamma(b + ux + 1) + total * (special.digamma(a + b) - special.digamma(b))
            - digamma_abx - dropped_per_x @ (1 / (b + ux)),
        ]
    )  # fmt: skip
    return float(value), gradient


def mbgnbd_log_likelihood(
    params: dict[str, float],
    x: np.ndarray,
    t_x: np.ndarray,
    T: np.ndarray,
    weights: np.ndarray | None = None,
) -> float:
    return weighted_log_likelihood(_value_and_gradient, _Rows.of, NAMES, params, x, t_x, T, weights)


def fit_mbgnbd(
    x: np.ndarray, t_x: np.ndarray, T: np.ndarray, weights: np.ndarray | None = None
) -> FitResult:
    """Maximum-likelihood MBG/NBD fit; ``weights`` count identical rows."""
    return fit_count_model(
        "MBG/NBD", NAMES, ("alpha",), _value_and_gradient, _Rows.of, x, t_x, T, weights
    )


def mbgnbd_probability_alive(
    params: dict[str, float], x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """P(still active | x, t_x, T); below 1 even for customers who never bought again."""
    x, t_x, T = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (x, t_x, T))
    return special.expit(-_log_odds_dropped(np.array([params[n] for n in NAMES]), x, t_x, T))


def mbgnbd_expected_purchases(
    params: dict[str, float], t: float, x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """Expected purchases in the next ``t`` time units given the history (Batislam et
    al. 2007, eq. 13): (a+b+x)/(a−1) · [1 − ((α+T)/(α+T+t))^(r+x)
    · 2F1(r+x, b+x+1; a+b+x; t/(α+T+t))] · P(alive)."""
    r, alpha, a, b = (params[name] for name in NAMES)
    x, t_x, T = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (x, t_x, T))
    hyp = special.hyp2f1(r + x, b + x + 1, a + b + x, t / (alpha + T + t))
    first = (a + b + x) / (a - 1) * (1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp)
    return first * mbgnbd_probability_alive(params, x, t_x, T)
