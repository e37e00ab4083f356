"""Writes the lifetimes reference figures the model and backtest tests compare with.

Run once, with the bench extra installed (lifetimes, pandas), from the repository root:

    python tests/processing/models/data/make_lifetimes_reference.py

It writes, beside itself:

- ``cdnow_master.csv.gz``: the CDNOW master file (23,570 customers, 69,659 orders,
  1997-01 to 1998-06) from lifetimes' datasets, as ``customer_id,day,value``;
- ``lifetimes_fits.json``: BG/NBD, MBG/NBD and Pareto/NBD fitted by lifetimes on
  ``cdnow_summary.csv`` (parameters, log-likelihood), and on the CDNOW master
  file's calibration period (to 1997-09-30, in days) their forecast of the
  39-week (273-day) holdout against what customers did;
- ``lifetimes_predictions.csv.gz``: per customer of ``cdnow_summary.csv``, each
  model's P(alive) and expected purchases in the next 39 weeks, from lifetimes'
  own functions at lifetimes' fitted parameters.
"""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
from lifetimes import BetaGeoFitter, ModifiedBetaGeoFitter, ParetoNBDFitter
from lifetimes.datasets import load_dataset
from lifetimes.utils import calibration_and_holdout_data

HERE = Path(__file__).parent
FITTERS = {"bgnbd": BetaGeoFitter, "mbgnbd": ModifiedBetaGeoFitter, "pareto_nbd": ParetoNBDFitter}
HORIZON_WEEKS = 39.0


def _params(fitter) -> dict[str, float]:
    return {name: float(value) for name, value in fitter.params_.items()}


def _log_likelihood(fitter, x, t_x, T) -> float:
    """lifetimes' own log-likelihood at its fitted parameters (each fitter spells it
    differently: a mean over log-parameters, or per customer for Pareto/NBD)."""
    params = np.asarray(fitter.params_.values, dtype=float)
    if isinstance(fitter, ParetoNBDFitter):
        return float(np.sum(fitter._conditional_log_likelihood(params, x, t_x, T)))
    mean = fitter._negative_log_likelihood(np.log(params), x, t_x, T, np.ones_like(x), 0.0)
    return -float(mean) * len(x)


def main() -> None:
    summary = pd.read_csv(HERE / "cdnow_summary.csv")
    x, t_x, T = summary["x"].to_numpy(float), summary["t_x"].to_numpy(float), summary["T"]
    T = T.to_numpy(float)
    fits: dict = {"cdnow_summary": {}, "cdnow_master_backtest": {}}
    columns: dict[str, np.ndarray] = {"ID": summary["ID"].to_numpy()}
    for name, cls in FITTERS.items():
        fitter = cls().fit(x, t_x, T)
        fits["cdnow_summary"][name] = {
            "params": _params(fitter),
            "log_likelihood": _log_likelihood(fitter, x, t_x, T),
        }
        columns[f"{name}_p_alive"] = fitter.conditional_probability_alive(x, t_x, T)
        columns[f"{name}_expected"] = fitter.conditional_expected_number_of_purchases_up_to_time(
            HORIZON_WEEKS, x, t_x, T
        )
    with gzip.open(HERE / "lifetimes_predictions.csv.gz", "wt", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in zip(*columns.values(), strict=True):
            writer.writerow([row[0], *(f"{value:.12g}" for value in row[1:])])

    master = load_dataset(
        "CDNOW_master.txt", header=0, sep=r"\s+", names=["customer_id", "date", "n", "value"]
    )
    master["day"] = pd.to_datetime(master["date"].astype(str), format="%Y%m%d")
    with gzip.open(HERE / "cdnow_master.csv.gz", "wt", newline="") as handle:
        master[["customer_id", "day", "value"]].assign(day=master["day"].dt.date).to_csv(
            handle, index=False
        )
    holdout = calibration_and_holdout_data(
        master,
        "customer_id",
        "day",
        calibration_period_end="1997-09-30",
        observation_period_end="1998-06-30",
        freq="D",
        monetary_value_col="value",  # (without a value column lifetimes fails on pandas 3)
    )
    cx, ctx, cT = (holdout[c].to_numpy(float) for c in ("frequency_cal", "recency_cal", "T_cal"))
    actual = holdout["frequency_holdout"].to_numpy(float)
    days = float(holdout["duration_holdout"].iloc[0])
    for name, cls in FITTERS.items():
        fitter = cls().fit(cx, ctx, cT)
        forecast = fitter.conditional_expected_number_of_purchases_up_to_time(days, cx, ctx, cT)
        fits["cdnow_master_backtest"][name] = {
            "params_in_days": _params(fitter),
            "customers": len(cx),
            "holdout_days": days,
            "forecast_purchases": float(forecast.sum()),
            "actual_purchases": float(actual.sum()),
            "ratio": float(forecast.sum() / actual.sum()),
            "mae": float(np.mean(np.abs(forecast - actual))),
            "rmse": float(np.sqrt(np.mean((forecast - actual) ** 2))),
        }
    (HERE / "lifetimes_fits.json").write_text(json.dumps(fits, indent=2) + "\n")


if __name__ == "__main__":
    main()
