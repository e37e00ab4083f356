"""The report's "How good is predicted CLV?" section, from ``clv_backtests``.

A marketer acting on "top 10% by predicted CLV" or "likely to churn" should see how
well the same models forecast this store's own recent past: per model, the repeat
purchases forecast for the holdout against what happened; for the model in use, the
calibration chart (mean forecast vs mean actual by repeat purchases before the
calibration end) and why it was chosen; and a plain warning when the figures say
not to lean on the forecast.
"""

from __future__ import annotations

from html import escape

import duckdb

from cdp.processing.models.clv_models import COUNT_MODELS
from cdp.processing.report import charts

# Forecasts off by more than this share for the cohort, or over fewer customers
# than this, get a warning in the report.
TRUSTED_RATIO = (0.8, 1.25)
MIN_TRUSTED_CUSTOMERS = 500

_TEXT = ' style="font-size:13px"'

_LATEST = """
SELECT model, calibration_end, holdout_days, holdout_shortened, customers, forecast_purchases,
       actual_purchases, ratio, mae, rmse, calibration, forecast_mean_spend,
       actual_mean_spend, top_decile_revenue_share, converged, chosen, message, as_of
FROM clv_backtests WHERE as_of = (SELECT max(as_of) FROM clv_backtests) ORDER BY model
"""

_CHOICE = """
SELECT choice FROM clv_model_runs WHERE chosen AND choice IS NOT NULL
ORDER BY as_of DESC LIMIT 1
"""


def backtest_section(con: duckdb.DuckDBPyConnection) -> tuple[str, str]:
    """(note, body) of the section."""
    cursor = con.execute(_LATEST)
    columns = [column[0] for column in cursor.description]
    rows = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    if not rows:
        return "No backtest yet: every build runs one.", "<p>No backtest yet.</p>"
    chosen = next((row for row in rows if row["chosen"]), rows[0])
    label = _label(chosen["model"])
    if chosen["calibration_end"] is None:
        return "The latest build could not backtest.", f"<p>{escape(chosen['message'] or '')}</p>"
    note = (
        f"Fitted on orders up to {chosen['calibration_end']}, the models forecast each "
        f"customer's purchases over the next {chosen['holdout_days']} days (to "
        f"{chosen['as_of']}); here is how that compares with what "
        f"{chosen['customers']:,} customers did."
    )
    [choice] = con.execute(_CHOICE).fetchall() or [(None,)]
    parts = [
        f"<p{_TEXT}><b>Predicted CLV uses {escape(label)}</b>"
        + (f" — {escape(choice[0])}" if choice and choice[0] else "")
        + ".</p>",
        _warning(chosen),
        _models_table(rows),
    ]
    if chosen["calibration"]:
        buckets = chosen["calibration"]
        parts.append(
            charts.column_chart(
                [bucket["repeat_purchases"] for bucket in buckets],
                {
                    "forecast": [float(bucket["mean_forecast"]) for bucket in buckets],
                    "actual": [float(bucket["mean_actual"]) for bucket in buckets],
                },
                "Holdout purchases by repeat purchases before the calibration end",
            )
        )
        parts.append(
            '<p class="note">Mean holdout purchases per customer, forecast and actual, grouped '
            f"by how many repeat purchases they made up to {chosen['calibration_end']} (x axis; "
            f"{escape(label)}).</p>"
        )
    facts = []
    if chosen["actual_mean_spend"] is not None:
        facts.append(
            f"Spend per purchase: Gamma-Gamma expected {charts.fmt(chosen['forecast_mean_spend'])}"
            f", actual {charts.fmt(chosen['actual_mean_spend'])}."
        )
    if chosen["top_decile_revenue_share"] is not None:
        facts.append(
            f"The top 10% of customers by predicted value brought "
            f"{chosen['top_decile_revenue_share']:.0%} of the holdout revenue."
        )
    if facts:
        parts.append(f"<p{_TEXT}>{escape(' '.join(facts))}</p>")
    return note, "".join(parts)


def _label(model: str) -> str:
    return COUNT_MODELS[model].label if model in COUNT_MODELS else model


def _warning(row: dict) -> str:
    reasons = []
    low, high = TRUSTED_RATIO
    if row["ratio"] is not None and not low <= row["ratio"] <= high:
        reasons.append(f"it forecast {row['ratio']:.0%} of the purchases that happened")
    if row["customers"] < MIN_TRUSTED_CUSTOMERS:
        reasons.append(f"only {row['customers']:,} customers were there to check it on")
    if row["holdout_shortened"]:
        reasons.append("the store's history is shorter than twice the horizon")
    if not row["converged"]:
        reasons.append("the model could not be fitted and fell back to simple rates")
    if not reasons:
        return ""
    return (
        '<p style="font-size:13px;color:#b45309"><b>Read predicted CLV with care:</b> '
        + escape("; ".join(reasons))
        + ".</p>"
    )


def _models_table(rows: list[dict]) -> str:
    head = (
        "<tr><th>model</th><th>forecast</th><th>actual</th><th>forecast / actual</th>"
        "<th>MAE per customer</th><th>RMSE</th></tr>"
    )
    lines = []
    for row in rows:
        name = escape(_label(row["model"])) + (" (used)" if row["chosen"] else "")
        if not row["converged"]:
            name += " <small>(not fitted: simple rates)</small>"
        if not row["customers"]:
            lines.append(f'<tr><td>{name}</td><td colspan="5">{escape(row["message"])}</td></tr>')
            continue
        ratio = "n/a" if row["ratio"] is None else f"{row['ratio']:.2f}"
        lines.append(
            f"<tr><td>{name}</td>"
            f'<td class="num">{row["forecast_purchases"]:,.0f}</td>'
            f'<td class="num">{row["actual_purchases"]:,}</td>'
            f'<td class="num">{ratio}</td>'
            f'<td class="num">{row["mae"]:.2f}</td>'
            f'<td class="num">{row["rmse"]:.2f}</td></tr>'
        )
    return f"<table>{head}{''.join(lines)}</table>"
