"""The CLV models by name: the three purchase-count models the build chooses among
(``COUNT_MODELS``), Gamma-Gamma for spend per order, and discounted CLV.

One module per model — ``bgnbd``, ``mbgnbd``, ``pareto_nbd``, ``gamma_gamma`` — with
what their fits share in ``_fitting``. All are pure numpy/scipy, fitted by maximum
likelihood over distinct rows with counts, and checked against the lifetimes
package's fitters (tests/processing/models).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cdp.processing.models._fitting import MIN_REPEAT_CUSTOMERS, WARM_START_ROWS, FitResult
from cdp.processing.models.bgnbd import (
    bgnbd_expected_purchases,
    bgnbd_log_likelihood,
    bgnbd_probability_alive,
    fit_bgnbd,
)
from cdp.processing.models.gamma_gamma import fit_gamma_gamma, gamma_gamma_expected_spend
from cdp.processing.models.mbgnbd import (
    fit_mbgnbd,
    mbgnbd_expected_purchases,
    mbgnbd_log_likelihood,
    mbgnbd_probability_alive,
)
from cdp.processing.models.pareto_nbd import (
    fit_pareto_nbd,
    pareto_nbd_expected_purchases,
    pareto_nbd_log_likelihood,
    pareto_nbd_probability_alive,
)

__all__ = [
    "COUNT_MODELS",
    "MIN_REPEAT_CUSTOMERS",
    "WARM_START_ROWS",
    "CountModel",
    "FitResult",
    "bgnbd_expected_purchases",
    "bgnbd_log_likelihood",
    "bgnbd_probability_alive",
    "discounted_clv",
    "fit_bgnbd",
    "fit_gamma_gamma",
    "fit_mbgnbd",
    "fit_pareto_nbd",
    "gamma_gamma_expected_spend",
    "mbgnbd_expected_purchases",
    "mbgnbd_log_likelihood",
    "mbgnbd_probability_alive",
    "pareto_nbd_expected_purchases",
    "pareto_nbd_log_likelihood",
    "pareto_nbd_probability_alive",
]

Rows = np.ndarray
ExpectedPurchases = Callable[[dict[str, float], float, Rows, Rows, Rows], Rows]


@dataclass(frozen=True)
class CountModel:
    """A purchase-count model as the build and the backtest use it."""

    name: str  # the key in clv.model and in clv_model_runs / clv_backtests
    label: str  # as people read it
    fit: Callable[[Rows, Rows, Rows, Rows | None], FitResult]
    probability_alive: Callable[[dict[str, float], Rows, Rows, Rows], Rows]
    expected_purchases: ExpectedPurchases
    log_likelihood: Callable[..., float]


COUNT_MODELS: dict[str, CountModel] = {
    model.name: model
    for model in (
        CountModel(
            "bgnbd",
            "BG/NBD",
            fit_bgnbd,
            bgnbd_probability_alive,
            bgnbd_expected_purchases,
            bgnbd_log_likelihood,
        ),
        CountModel(
            "mbgnbd",
            "MBG/NBD",
            fit_mbgnbd,
            mbgnbd_probability_alive,
            mbgnbd_expected_purchases,
            mbgnbd_log_likelihood,
        ),
        CountModel(
            "pareto_nbd",
            "Pareto/NBD",
            fit_pareto_nbd,
            pareto_nbd_probability_alive,
            pareto_nbd_expected_purchases,
            pareto_nbd_log_likelihood,
        ),
    )
}


def discounted_clv(
    params: dict[str, float],
    spend_per_order: np.ndarray,
    x: np.ndarray,
    t_x: np.ndarray,
    T: np.ndarray,
    *,
    months: int,
    units_per_month: float,
    annual_discount_rate: float,
    expected_purchases: ExpectedPurchases = bgnbd_expected_purchases,
) -> np.ndarray:
    """Sum over each future month of expected purchases in that month × expected
    spend, discounted monthly at the rate equivalent to ``annual_discount_rate``;
    ``expected_purchases`` is the count model's (BG/NBD by default)."""
    monthly_rate = (1 + annual_discount_rate) ** (1 / 12) - 1
    total = np.zeros(np.shape(x), dtype=float)
    previous = np.zeros_like(total)
    for month in range(1, months + 1):
        cumulative = expected_purchases(params, month * units_per_month, x, t_x, T)
        total += (cumulative - previous) * spend_per_order / (1 + monthly_rate) ** month
        previous = cumulative
    return total
