"""``cdp backtest``: how good predicted CLV is, per model, on this store's orders."""

from __future__ import annotations

import argparse

from cdp.processing.jobs.backtest import backtest_published_orders
from cdp.processing.models.clv_models import COUNT_MODELS
from cdp.processing.stages.clv_backtest import Backtest, describe
from cdp.settings import Settings
from cdp.storage.database import connect_live


def backtest(args: argparse.Namespace, settings: Settings) -> int:
    with connect_live(settings.storage) as con:
        result = backtest_published_orders(con, settings, args.as_of, args.holdout_days)
    print_backtest(result)
    return 0


def print_backtest(result: Backtest) -> None:
    holdout = result.holdout
    if holdout.calibration_end is None:
        print(f"backtest as of {result.as_of}: not run ({holdout.note})")
        return
    print(
        f"backtest as of {result.as_of}: fitted on orders to {holdout.calibration_end}, "
        f"forecast the next {holdout.days} days" + (f" ({holdout.note})" if holdout.note else "")
    )
    for row in result.rows:
        mark = "*" if row["chosen"] else " "
        print(f" {mark} {describe(row)}")
        if not row["converged"]:
            print(f"      fit: {row['message']}")
    print(f"  * {COUNT_MODELS[result.chosen].label} predicts: {result.choice}")
    chosen = next(row for row in result.rows if row["chosen"])
    if chosen["calibration"]:
        print("  repeat purchases before   customers   mean forecast   mean actual")
        for bucket in chosen["calibration"]:
            print(
                f"  {bucket['repeat_purchases']:>22}   {bucket['customers']:>9,}   "
                f"{bucket['mean_forecast']:>13.2f}   {bucket['mean_actual']:>11.2f}"
            )
    if chosen["actual_mean_spend"] is not None:
        print(
            f"  spend per purchase: Gamma-Gamma expected {chosen['forecast_mean_spend']:,.2f}, "
            f"actual {chosen['actual_mean_spend']:,.2f}"
        )
    if chosen["top_decile_revenue_share"] is not None:
        print(
            f"  the top 10% by forecast value brought {chosen['top_decile_revenue_share']:.0%} "
            "of the holdout revenue"
        )
