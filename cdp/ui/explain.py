"""One line per CLV variant saying how it was computed and over which window, so a
marketer can tell why the four numbers differ (formulas: processing/stages/clv.py)."""

from __future__ import annotations

from typing import Any

from cdp.processing.models.clv_models import COUNT_MODELS
from cdp.settings import Settings

_LABELS = {name: model.label for name, model in COUNT_MODELS.items()} | {
    "gamma_gamma": "Gamma-Gamma"
}
_PARAMETERS = {"r": "r", "alpha": "α", "a": "a", "b": "b", "s": "s", "beta": "β",
               "p": "p", "q": "q", "gamma": "γ"}  # fmt: skip


def models_behind_prediction(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The model runs predicted CLV came from, as people read them: the purchase-count
    model the build chose (``chosen``; BG/NBD in runs from before there was a choice)
    and Gamma-Gamma, each with its parameters, customers and whether the fit held."""
    counts = [run for run in runs if run["model"] in COUNT_MODELS]
    chosen = next((run for run in counts if run.get("chosen")), None) or next(
        (run for run in counts if run["model"] == "bgnbd"), None
    )
    spend = next((run for run in runs if run["model"] == "gamma_gamma"), None)
    return [
        {
            "label": _LABELS[run["model"]],
            "counts_purchases": run["model"] in COUNT_MODELS,
            "parameters": ", ".join(
                f"{label}={run[name]:.3f}"
                for name, label in _PARAMETERS.items()
                if run.get(name) is not None
            ),
            "customers": run["customers"],
            "converged": run["converged"],
            "message": run["message"],
            "choice": run.get("choice"),
        }
        for run in (chosen, spend)
        if run is not None
    ]


def clv_variants(
    profile: dict[str, Any], settings: Settings, purchase_model: str = "BG/NBD"
) -> list[dict[str, Any]]:
    """``purchase_model``: the label of the count model predicted CLV used."""
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
            "formula": f"{purchase_model} expected purchases × Gamma-Gamma spend per order, "
            "discounted "
            f"monthly at {clv.annual_discount_rate:.0%} a year.",
            "window": f"the next {clv.horizon_months} months, fitted on all history",
        },
    ]
