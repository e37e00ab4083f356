"""How good is predicted CLV for this store? A backtest at every build.

The store's own history is split at a *calibration end*, ``holdout`` days before
the as-of: every purchase-count model (BG/NBD, MBG/NBD, Pareto/NBD) and Gamma-Gamma
are fitted on the orders up to it, exactly as a build fits them, and each customer
who had bought by then gets a forecast of their purchases over the holdout — which
is then compared with what they actually did. Per model, ``clv_backtests`` keeps
the cohort's forecast and actual repeat purchases (and their ratio), the
per-customer MAE and RMSE, the calibration table by repeat purchases before the
calibration end (0, 1, …, 7+: mean forecast vs mean actual, as lifetimes'
``plot_calibration_purchases_vs_holdout_purchases``), Gamma-Gamma's expected spend
per purchase against the actual, and how much of the holdout revenue the top 10%
by forecast value brought.

The holdout is ``clv.backtest_holdout_days``, by default the prediction horizon:
the forecast the build makes is over the horizon, so that is the span worth
checking. A store with less history than twice that gets a holdout of half its
history, and the row says so; one with under two weeks of history gets no
backtest (rows with a message, no figures). Customers whose first order falls in
the holdout are not forecast by any model and are left out.

Under ``clv.model = "auto"`` the build then predicts with the model whose backtest
had the lowest per-customer MAE among those whose calibration fit converged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta

import duckdb
import pyarrow as pa

from cdp.processing.models.clv_models import COUNT_MODELS
from cdp.processing.stages.clv import fit_models, forecast, summarize_purchases
from cdp.settings import Settings
from cdp.storage.database import execute_script
from cdp.storage.sql import read_sql

DAYS_PER_MONTH = 30.4375
MIN_HOLDOUT_DAYS = 7

# The purchases a backtest reads, as ``backtest_purchases`` (customer_id, day, value):
# a build's own orders, or the latest build's published ones for ``cdp backtest``.
BUILD_PURCHASES = """
CREATE OR REPLACE TEMP VIEW backtest_purchases AS
SELECT customer_id, day, gross - refunded AS value FROM order_facts WHERE NOT cancelled
"""
PUBLISHED_PURCHASES = """
CREATE OR REPLACE TEMP VIEW backtest_purchases AS
SELECT customer_id, ordered_at::DATE AS day, gross - refunded AS value
FROM orders WHERE NOT cancelled
"""

_PUBLISH = """
DELETE FROM clv_backtests WHERE as_of IN (SELECT DISTINCT as_of FROM build_clv_backtests);

INSERT INTO clv_backtests BY NAME SELECT * FROM build_clv_backtests;
"""


@dataclass(frozen=True)
class Holdout:
    calibration_end: date | None  # None: no backtest (see note)
    days: int
    shortened: bool
    note: str  # why it was shortened, or why there is no backtest


@dataclass(frozen=True)
class Backtest:
    as_of: date
    holdout: Holdout
    rows: list[dict]  # one per model, as stored in clv_backtests
    chosen: str
    choice: str


def plan_holdout(
    first_day: date | None, as_of: date, requested: int | None, horizon_days: int
) -> Holdout:
    """The holdout for a store whose first order was on ``first_day``: ``requested``
    days when given (kept as asked while some history precedes it), else the
    horizon, shortened to half the history when the history is shorter than twice
    that."""
    if first_day is None:
        return Holdout(None, 0, False, "no orders: nothing to backtest")
    history = (as_of - first_day).days
    if history < 2 * MIN_HOLDOUT_DAYS:
        return Holdout(
            None,
            0,
            False,
            f"{history} days of order history: a backtest needs at least {2 * MIN_HOLDOUT_DAYS}",
        )
    if requested:
        if requested >= history:
            return Holdout(
                None,
                requested,
                False,
                f"a {requested}-day holdout leaves no calibration period in {history} days "
                "of order history",
            )
        return Holdout(as_of - timedelta(days=requested), requested, False, "")
    days = horizon_days
    if days > math.ceil(history / 2):
        days = math.ceil(history / 2)
        note = (
            f"holdout shortened from the {horizon_days}-day horizon to {days} days: "
            f"the store has {history} days of order history"
        )
        return Holdout(as_of - timedelta(days=days), days, True, note)
    return Holdout(as_of - timedelta(days=days), days, False, "")


def run_backtest(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    as_of: date,
    holdout_days: int | None = None,
) -> Backtest:
    """Backtest every purchase-count model on ``backtest_purchases`` (see
    ``BUILD_PURCHASES``) as of the end of ``as_of``; fill ``build_clv_backtests`` and
    choose the model the predictions use. Replaces the temp tables ``clv_purchases``
    and ``clv_inputs``: run it before the build's own fits."""
    clv = settings.clv
    [(first_day,)] = con.execute(
        "SELECT min(day) FROM backtest_purchases WHERE day <= $as_of", {"as_of": as_of}
    ).fetchall()
    holdout = plan_holdout(
        first_day,
        as_of,
        holdout_days or clv.backtest_holdout_days or None,
        round(clv.horizon_months * DAYS_PER_MONTH),
    )
    forecasts: list[pa.Table] = []
    if holdout.calibration_end is None:
        outcomes = {name: (False, "not run") for name in COUNT_MODELS}
    else:
        con.execute("CREATE OR REPLACE TEMP VIEW clv_purchases AS FROM backtest_purchases")
        summarize_purchases(con, holdout.calibration_end)
        models = fit_models(con)
        outcomes = {name: (fit.converged, fit.message) for name, fit in models.counts.items()}
        for name in COUNT_MODELS:
            result = forecast(
                con, settings, holdout.calibration_end, models, name, holdout.days / 7.0
            )
            forecasts.append(
                pa.table(
                    {
                        "customer_id": result.customer_ids,
                        "x": result.x,
                        "model": pa.array([name] * len(result.x), pa.string()),
                        "forecast": result.expected_purchases,
                        "spend": result.spend_per_order,
                    }
                )
            )
    schema = pa.schema(
        [
            ("customer_id", pa.string()),
            ("x", pa.float64()),
            ("model", pa.string()),
            ("forecast", pa.float64()),
            ("spend", pa.float64()),
        ]
    )
    tables = [table.cast(schema) for table in forecasts] or [schema.empty_table()]
    con.register("backtest_forecasts", pa.concat_tables(tables))
    con.register(
        "backtest_models",
        pa.table(
            {
                "model": list(outcomes),
                "converged": [converged for converged, _ in outcomes.values()],
                "message": [message for _, message in outcomes.values()],
            }
        ),
    )
    try:
        execute_script(
            con,
            read_sql("cdp.processing.stages", "clv_backtest.sql"),
            {
                "as_of": as_of,
                "calibration_end": holdout.calibration_end,
                "holdout_days": holdout.days,
                "shortened": holdout.shortened,
                "note": holdout.note,
            },
        )
    finally:
        con.unregister("backtest_forecasts")
        con.unregister("backtest_models")
    columns = [column for column, *_ in con.execute("DESCRIBE build_clv_backtests").fetchall()]
    rows = [
        dict(zip(columns, row, strict=True))
        for row in con.execute("FROM build_clv_backtests ORDER BY model").fetchall()
    ]
    chosen, choice = choose_model(clv.model, rows)
    con.execute("UPDATE build_clv_backtests SET chosen = (model = $chosen)", {"chosen": chosen})
    for row in rows:
        row["chosen"] = row["model"] == chosen
    return Backtest(as_of, holdout, rows, chosen, choice)


def choose_model(setting: str, rows: list[dict]) -> tuple[str, str]:
    """The purchase-count model the predictions use, and why: the configured one, or
    under ``auto`` the lowest holdout MAE among the models whose calibration fit
    converged (BG/NBD, the long-standing default, when none did)."""
    if setting != "auto":
        return setting, f"clv.model = {setting!r}"
    scored = sorted(
        (row["mae"], row["model"]) for row in rows if row["converged"] and row["mae"] is not None
    )
    if not scored:
        return "bgnbd", "auto: no model's calibration fit converged, so BG/NBD (the default)"
    ranking = " < ".join(f"{COUNT_MODELS[name].label} {mae:.3f}" for mae, name in scored)
    return scored[0][1], f"auto: lowest holdout MAE in the backtest ({ranking})"


def publish_backtest(con: duckdb.DuckDBPyConnection) -> None:
    """Write ``build_clv_backtests`` into ``clv_backtests``, replacing its as-of's rows
    (within the caller's transaction)."""
    execute_script(con, _PUBLISH, {})


def describe(row: dict) -> str:
    """One backtest row in one line, as ``cdp status`` and ``cdp backtest`` print it."""
    label = COUNT_MODELS[row["model"]].label if row["model"] in COUNT_MODELS else row["model"]
    if row["calibration_end"] is None or not row["customers"]:
        return f"{label}: no backtest ({row['message']})"
    ratio = "n/a" if row["ratio"] is None else f"{row['ratio']:.2f}"
    return (
        f"{label}: forecast {row['forecast_purchases']:,.0f} vs {row['actual_purchases']:,} "
        f"actual repeat purchases over {row['holdout_days']} days after "
        f"{row['calibration_end']} (ratio {ratio}), MAE {row['mae']:.2f} per customer, "
        f"{row['customers']:,} customers"
        + (" (holdout shortened)" if row["holdout_shortened"] else "")
    )
