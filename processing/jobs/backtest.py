"""``cdp backtest``: the backtest of predicted CLV on demand, over the orders the
latest build published, for any as-of and holdout (a build runs it by itself).

Its rows replace the as-of's rows in ``clv_backtests``; ``chosen`` then says which
model ``clv.model`` would choose with this holdout, not what that build predicted
with (``clv_model_runs`` keeps that).
"""

from __future__ import annotations

from datetime import date

import duckdb

from cdp.errors import CdpError
from cdp.processing.stages.clv_backtest import (
    PUBLISHED_PURCHASES,
    Backtest,
    publish_backtest,
    run_backtest,
)
from cdp.processing.stages.run import LIVE_BUILD_STATUSES
from cdp.settings import Settings
from cdp.storage.transactions import transaction


def backtest_published_orders(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    as_of: date | None = None,
    holdout_days: int | None = None,
) -> Backtest:
    """Backtest as of the end of ``as_of`` (default: the latest build's as-of date)
    on the published ``orders``, store the rows (unless it could not run: too long a
    holdout) and return them."""
    [(latest,)] = con.execute(
        "SELECT max(as_of) FROM builds WHERE list_contains($live, status)",
        {"live": list(LIVE_BUILD_STATUSES)},
    ).fetchall()
    if latest is None:
        raise CdpError(
            "no build yet: the backtest reads the orders a build publishes (run `cdp build`)"
        )
    as_of = as_of or latest.date()
    if as_of > latest.date():
        raise CdpError(
            f"--as-of {as_of}: after the latest build ({latest.date()}), whose orders the "
            "backtest reads; run `cdp build` first"
        )
    con.execute(PUBLISHED_PURCHASES)
    result = run_backtest(con, settings, as_of, holdout_days)
    if result.holdout.calibration_end is not None:  # a backtest that could not run
        with transaction(con):  # does not replace one that did
            publish_backtest(con)
    return result
