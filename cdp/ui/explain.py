"""One line per CLV variant saying how it was computed and over which window, so a
marketer can tell why the four numbers differ (formulas: processing/stages/clv.py)."""

from __future__ import annotations

from typing import Any

from cdp.settings import Settings


def clv_variants(profile: dict[str, Any], settings: Settings) -> list[dict[str, Any]]:
    clv = settings.clv
    window = clv.kpi_window_days
    return [
        {
            "name": "Historic CLV",
            "value": profile.get("historic_clv"),
            "formula": "Net revenue to date: completed orders minus refunds and cancellations.",
            "window": "all history up to the build",
        },
        {
            "name": "Basic CLV",
            "value": profile.get("basic_clv"),
            "formula": "AOV × purchase frequency × customer lifespan (the store's measured "
            f"lifespan, else {clv.default_lifespan_years:g} years).",
            "window": f"frequency over the last {window} days",
        },
        {
            "name": "Advanced CLV",
            "value": profile.get("advanced_clv"),
            "formula": "Monthly revenue ÷ the store's monthly churn rate × gross margin "
            f"({clv.gross_margin:.0%}).",
            "window": f"revenue and churn over the last {window} days",
        },
        {
            "name": "Predicted CLV",
            "value": profile.get("predicted_clv"),
            "formula": "BG/NBD expected purchases × Gamma-Gamma spend per order, discounted "
            f"monthly at {clv.annual_discount_rate:.0%} a year.",
            "window": f"the next {clv.horizon_months} months, fitted on all history",
        },
    ]
