"""Customer lifetime value, every variant, and the store KPIs they rest on.

All money is net of refunds and cancellations, in the reporting currency. The
*KPI window* is the trailing ``clv.kpi_window_days`` (365 by default) before as-of.

Store level (``store_kpis``, one row per as-of date):

- **AOV** = revenue in the window / orders in the window.
- **Purchase frequency** = orders in the window / distinct buyers in the window.
- **Customer value** = AOV × purchase frequency (per buyer per window-year).
- **Churn rate (monthly)**: for each of the last 12 month starts, the share of
  customers active then (an order within ``clv.inactive_after_days``) who are no
  longer active a month later; averaged. **Retention rate** = 1 − churn.
- **Lifespan**: the mean span from first to last order of churned customers, once
  the store has ``clv.lifespan_min_history_days`` of history and 30 churned
  customers; otherwise ``clv.default_lifespan_years`` (3), and ``lifespan_is_default``
  says so.
- **Basic CLV** = customer value × lifespan (years). Equivalently: purchases per
  year × AOV × retention time.
- **Advanced CLV** = (monthly revenue per customer / monthly churn rate) × gross
  margin, with monthly revenue per customer = window revenue / window months /
  buyers. Undefined (NULL) when nobody churned.
- **Repeat rate** = buyers with two or more orders / buyers.
- **Conversion rate** = buyers in the window / customers who viewed a product in it;
  **maximum cost per click** = basic CLV × conversion rate.
- **CAC** = marketing spend in the window (``clv.marketing_spend_csv``) / customers
  whose first order fell in it; **LTV:CAC** = basic CLV / CAC (≈ 3 is called
  healthy); **CLV − CAC** is the return on each customer.

Per customer (``customer_profiles``):

- **historic_clv** = net revenue to date.
- **basic_clv** = the customer's AOV × their purchase frequency (orders per year
  in the KPI window) × the store lifespan.
- **advanced_clv** = the customer's monthly revenue in the KPI window / the store's
  monthly churn rate × gross margin.
- **predicted_clv**: expected purchases × Gamma-Gamma expected spend per order,
  month by month over ``clv.horizon_months``, discounted at
  ``clv.annual_discount_rate``; fitted on the store's own orders at every build,
  in weeks, with purchases counted per day (several orders on one day are one
  purchase, as the models assume). Expected purchases come from one of three
  purchase-count models — BG/NBD, MBG/NBD, Pareto/NBD — all fitted at every build:
  ``clv.model``, or under ``auto`` the one with the lowest per-customer error in
  this build's backtest (:mod:`cdp.processing.stages.clv_backtest`).
  ``p_alive`` and ``expected_purchases`` (over the horizon) come with it. When a
  model cannot be fitted (see ``clv_model_runs``),
  expected purchases fall back to the customer's own rate (repeat purchases per
  week of their history), p_alive to 1 within ``clv.inactive_after_days`` of the
  last order and 0 after, and spend to the customer's mean order value.
"""

from __future__ import annotations

import csv
from calendar import monthrange
from dataclasses import dataclass, replace
from datetime import date, datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from cdp.errors import ConfigError
from cdp.processing.models import clv_models
from cdp.processing.stages.profiles import ProfileColumns
from cdp.settings import Settings
from cdp.storage.database import execute_script
from cdp.storage.sql import read_sql

WEEKS_PER_MONTH = 52.0 / 12.0
MIN_CHURNED_FOR_LIFESPAN = 30

# Formula CLVs per customer, from the store's lifespan, churn and margin.
FORMULA_CLV_COLUMNS = ProfileColumns(
    """(coalesce(p.aov, 0) * p.purchase_frequency * k.lifespan_years)::DOUBLE AS basic_clv,
       (coalesce(w.revenue, 0) / (k.window_days / 30.4375) / nullif(k.churn_rate_monthly, 0)
           * k.gross_margin)::DOUBLE AS advanced_clv""",
    """CROSS JOIN build_kpis k
       LEFT JOIN build_window_revenue w ON w.customer_id = p.customer_id""",
    name="clv.FORMULA_CLV_COLUMNS",
)

# Customers who never ordered: nothing to predict from, nothing expected.
PREDICTED_CLV_COLUMNS = ProfileColumns(
    """c.p_alive::DOUBLE AS p_alive,
       (CASE WHEN p.orders = 0 THEN 0 ELSE c.expected_purchases END)::DOUBLE
           AS expected_purchases,
       c.expected_spend_per_order::DOUBLE AS expected_spend_per_order,
       (CASE WHEN p.orders = 0 THEN 0 ELSE c.predicted_clv END)::DOUBLE AS predicted_clv""",
    "LEFT JOIN build_clv_predictions c ON c.customer_id = p.customer_id",
    name="clv.PREDICTED_CLV_COLUMNS",
)

# The models' per-customer inputs, from ``clv_purchases`` (customer_id, day, value):
# a view over this build's orders, or any table of purchases (the benchmark's slice).
_MODEL_INPUTS = """
CREATE OR REPLACE TEMP TABLE clv_inputs AS
WITH days AS (
    SELECT customer_id, day, sum(value) AS value FROM clv_purchases
    WHERE day <= $as_of::DATE GROUP BY ALL
)
SELECT customer_id,
       count(*) - 1 AS x,
       date_diff('day', min(day), max(day)) / 7.0 AS t_x,
       date_diff('day', min(day), $as_of::DATE) / 7.0 AS T,
       -- mean value of repeat purchase days (the first day excluded, as in the model)
       coalesce((sum(value) - arg_min(value, day)) / nullif(count(*) - 1, 0), 0) AS m,
       avg(value) AS mean_order_value,
       max(day) AS last_day
FROM days GROUP BY 1
"""

_BUILD_PURCHASES = """
CREATE OR REPLACE TEMP VIEW clv_purchases AS
SELECT customer_id, day, gross - refunded AS value FROM order_facts WHERE NOT cancelled
"""

# Ordered so that the same data always sums in the same order: the likelihood can be
# nearly flat along a ridge, and a build must give the same fit when re-run.
_GROUPED = """
SELECT x, t_x, T, count(*) AS n FROM clv_inputs GROUP BY ALL ORDER BY ALL
"""

_REPEAT_SPEND = """
SELECT x, m FROM clv_inputs WHERE x > 0 AND m > 0 ORDER BY x, m
"""


@dataclass(frozen=True)
class ModelRuns:
    """Every model's fit, and which purchase-count model the predictions use, and why."""

    counts: dict[str, clv_models.FitResult]  # by COUNT_MODELS name
    gamma_gamma: clv_models.FitResult
    chosen: str = "bgnbd"
    choice: str = ""

    @property
    def bgnbd(self) -> clv_models.FitResult:
        return self.counts["bgnbd"]

    @property
    def count(self) -> clv_models.FitResult:
        """The chosen purchase-count model's fit."""
        return self.counts[self.chosen]


def compute_store_kpis(con: duckdb.DuckDBPyConnection, settings: Settings, as_of: datetime) -> None:
    """Fill ``build_kpis``, and ``build_window_revenue`` for ``FORMULA_CLV_COLUMNS``."""
    clv = settings.clv
    execute_script(
        con,
        read_sql("cdp.processing.stages", "clv_store_kpis.sql"),
        {
            "as_of": as_of,
            "window": clv.kpi_window_days,
            "inactive_days": clv.inactive_after_days,
            "min_history": clv.lifespan_min_history_days,
            "min_churned": MIN_CHURNED_FOR_LIFESPAN,
            "default_lifespan": clv.default_lifespan_years,
            "margin": clv.gross_margin,
            "currency": settings.money.reporting_currency,
        },
    )
    if clv.marketing_spend_csv:
        _apply_marketing_spend(con, Path(clv.marketing_spend_csv), as_of, clv.kpi_window_days)


def _apply_marketing_spend(
    con: duckdb.DuckDBPyConnection, path: Path, as_of: datetime, window_days: int
) -> None:
    spend = read_marketing_spend(path)
    start = as_of.date().toordinal() - window_days
    in_window = sum(
        amount
        for (year, month), amount in spend.items()
        if start <= _month_end_ordinal(year, month) and (year, month) <= (as_of.year, as_of.month)
    )
    con.execute(
        "UPDATE build_kpis SET marketing_spend = $spend, cac = $spend / nullif(new_customers, 0)",
        {"spend": in_window},
    )
    con.execute(
        "UPDATE build_kpis SET ltv_to_cac = basic_clv / nullif(cac, 0),"
        " clv_minus_cac = basic_clv - cac"
    )


def _month_end_ordinal(year: int, month: int) -> int:
    return date(year, month, monthrange(year, month)[1]).toordinal()


def read_marketing_spend(path: Path) -> dict[tuple[int, int], float]:
    """Spend per (year, month) summed over channels; errors name the line and column."""
    try:
        handle = path.open(newline="")
    except FileNotFoundError:
        raise ConfigError(f"clv.marketing_spend_csv: file {str(path)!r} does not exist") from None
    totals: dict[tuple[int, int], float] = {}
    with handle:
        reader = csv.DictReader(handle)
        missing = {"period", "channel", "spend"} - set(reader.fieldnames or [])
        if missing:
            raise ConfigError(
                f"clv.marketing_spend_csv: {path} lacks column(s) {', '.join(sorted(missing))}"
            )
        for line, row in enumerate(reader, start=2):
            try:
                year, month = (int(part) for part in row["period"].split("-"))
                if not 1 <= month <= 12:
                    raise ValueError
            except ValueError:
                raise ConfigError(
                    f"{path} line {line}: period {row['period']!r} is not YYYY-MM"
                ) from None
            try:
                amount = float(row["spend"])
            except ValueError:
                raise ConfigError(
                    f"{path} line {line}: spend {row['spend']!r} is not a number"
                ) from None
            totals[(year, month)] = totals.get((year, month), 0.0) + amount
    return totals


def summarize_purchases(con: duckdb.DuckDBPyConnection, as_of: datetime | date) -> None:
    """Fill ``clv_inputs`` (x, t_x, T in weeks, m, …, per customer) from the relation
    ``clv_purchases`` (customer_id, day, value): several orders on one day are one
    purchase, as the models assume."""
    con.execute(_MODEL_INPUTS, {"as_of": as_of})


def fit_models(con: duckdb.DuckDBPyConnection) -> ModelRuns:
    """Fit the three purchase-count models and Gamma-Gamma by maximum likelihood on
    ``clv_inputs``."""
    grouped = con.sql(_GROUPED).to_arrow_table()
    x, t_x, T, n = (grouped[name].to_numpy() for name in ("x", "t_x", "T", "n"))
    counts = {name: model.fit(x, t_x, T, n) for name, model in clv_models.COUNT_MODELS.items()}
    spend = con.sql(_REPEAT_SPEND).to_arrow_table()
    gamma_gamma = clv_models.fit_gamma_gamma(spend["x"].to_numpy(), spend["m"].to_numpy())
    return ModelRuns(counts, gamma_gamma)


@dataclass(frozen=True)
class Forecast:
    """Per customer of ``clv_inputs``, in its order (by customer_id)."""

    customer_ids: pa.ChunkedArray
    x: np.ndarray
    p_alive: np.ndarray
    expected_purchases: np.ndarray
    spend_per_order: np.ndarray
    predicted_clv: np.ndarray | None  # discounted; only when asked for


def forecast(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    as_of: date | datetime,
    models: ModelRuns,
    model: str,
    horizon_weeks: float,
    *,
    discounted: bool = False,
) -> Forecast:
    """Each customer's P(alive), expected purchases over ``horizon_weeks`` and spend
    per order from ``model``'s fit on ``clv_inputs`` (summarized as of ``as_of``),
    falling back to simple rates when that fit did not converge; with ``discounted``
    also the discounted CLV over ``clv.horizon_months``."""
    clv = settings.clv
    count, gamma_gamma = models.counts[model], models.gamma_gamma
    functions = clv_models.COUNT_MODELS[model]
    inputs = con.sql(
        "SELECT customer_id, x, t_x, T, m, mean_order_value, "
        "date_diff('day', last_day, $as_of::DATE) AS idle_days FROM clv_inputs"
        " ORDER BY customer_id",
        params={"as_of": as_of},
    ).to_arrow_table()
    x, t_x, T = (inputs[name].to_numpy().astype(float) for name in ("x", "t_x", "T"))
    m = inputs["m"].to_numpy().astype(float)
    mean_value = inputs["mean_order_value"].to_numpy().astype(float)

    if count.converged:
        p_alive = functions.probability_alive(count.params, x, t_x, T)
        expected = functions.expected_purchases(count.params, horizon_weeks, x, t_x, T)
    else:
        idle_days = inputs["idle_days"].to_numpy().astype(float)
        p_alive = np.where(idle_days <= clv.inactive_after_days, 1.0, 0.0)
        rate = np.divide(x, T, out=np.zeros_like(x), where=T > 0)
        expected = rate * horizon_weeks * p_alive
    fallback_spend = float(np.mean(mean_value)) if len(mean_value) else 0.0
    spend = clv_models.gamma_gamma_expected_spend(
        gamma_gamma.params if gamma_gamma.converged else {},
        x,
        np.where(x > 0, m, mean_value),
        fallback_spend,
    )
    predicted = None
    if discounted and count.converged:
        predicted = clv_models.discounted_clv(
            count.params,
            spend,
            x,
            t_x,
            T,
            months=clv.horizon_months,
            units_per_month=WEEKS_PER_MONTH,
            annual_discount_rate=clv.annual_discount_rate,
            expected_purchases=functions.expected_purchases,
        )
    elif discounted:
        monthly = (1 + clv.annual_discount_rate) ** (1 / 12) - 1
        months = np.arange(1, clv.horizon_months + 1)
        discount = float(np.mean(1 / (1 + monthly) ** months))
        predicted = expected * spend * discount
    return Forecast(
        inputs["customer_id"],
        x,
        _finite(p_alive),
        _finite(expected),
        _finite(spend),
        None if predicted is None else _finite(predicted),
    )


def predict_clv(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    as_of: datetime,
    chosen: str | None = None,
    choice: str = "",
) -> ModelRuns:
    """Fit every model on this build's orders, and fill ``build_clv_predictions`` for
    ``PREDICTED_CLV_COLUMNS`` from the ``chosen`` purchase-count model (default the
    configured one, BG/NBD under ``auto`` when no backtest chose)."""
    clv = settings.clv
    if chosen is None:
        chosen = "bgnbd" if clv.model == "auto" else clv.model
        choice = choice or f"clv.model = {clv.model!r}"
    con.execute(_BUILD_PURCHASES)
    summarize_purchases(con, as_of)
    models = replace(fit_models(con), chosen=chosen, choice=choice)
    result = forecast(
        con,
        settings,
        as_of,
        models,
        chosen,
        clv.horizon_months * WEEKS_PER_MONTH,
        discounted=True,
    )
    predictions = pa.table(
        {
            "customer_id": result.customer_ids,
            "p_alive": result.p_alive,
            "expected_purchases": result.expected_purchases,
            "expected_spend_per_order": result.spend_per_order,
            "predicted_clv": result.predicted_clv,
        }
    )
    con.register("clv_predictions", predictions)
    try:  # a table, not the registered Arrow data: PREDICTED_CLV_COLUMNS reads it later
        con.execute("CREATE OR REPLACE TEMP TABLE build_clv_predictions AS FROM clv_predictions")
    finally:
        con.unregister("clv_predictions")
    return models


def _finite(values: np.ndarray) -> np.ndarray:
    """Predictions are stored only as finite numbers: a model must never write NaN."""
    return np.where(np.isfinite(values), values, 0.0)
