"""``cdp build``: customer profiles, CLV, RFM and store KPIs, then the analyst
database and the report."""

from __future__ import annotations

import argparse

from cdp.processing.as_of import end_of_day
from cdp.processing.jobs.kpis import StoreKpis
from cdp.processing.jobs.pipeline import STAGES, PublishedBuild, build_and_publish
from cdp.processing.models.clv_models import COUNT_MODELS
from cdp.processing.segmentation.config import load_segment_config
from cdp.processing.stages.clv_backtest import describe
from cdp.progress import Progress
from cdp.settings import Settings
from cdp.storage.database import connect_live


def build(args: argparse.Namespace, settings: Settings) -> int:
    as_of = end_of_day(args.as_of) if args.as_of else None
    segments = load_segment_config(settings)  # a bad rule fails here, before any work
    with connect_live(settings.storage) as con, Progress("build", total=len(STAGES)) as bar:
        stage = iter(range(1, len(STAGES) + 1))
        published = build_and_publish(
            con, settings, segments, as_of, progress=lambda name: bar.update(next(stage), name)
        )
    _print_build(published, segment_count=len(segments.segments))
    return 0


def _print_build(published: PublishedBuild, segment_count: int) -> None:
    report = published.build
    print(
        f"build {report.build_id} as of {report.as_of:%Y-%m-%d %H:%M} UTC: {report.customers:,} "
        f"customers ({report.identity.merges:,} merged by new links) in {report.seconds:.1f} s"
    )
    if published.kpis is not None:
        _print_kpis(published.kpis)
    models = report.models
    fits = [(model.label, models.counts[name]) for name, model in COUNT_MODELS.items()]
    for label, fit in [*fits, ("Gamma-Gamma", models.gamma_gamma)]:
        params = ", ".join(f"{key}={value:.4g}" for key, value in fit.params.items())
        print(f"  {label}: {fit.message}" + (f" ({params})" if fit.converged else ""))
    print(f"  predicting with {COUNT_MODELS[models.chosen].label}: {models.choice}")
    chosen = [row for row in report.backtest.rows if row["chosen"]]
    if chosen:
        print(f"  backtest {describe(chosen[0])}")
    if report.unconverted_orders:
        print(
            f"  {report.unconverted_orders:,} orders left out: no exchange rate for their currency"
        )
    if published.analyst is not None:
        print(f"  {report.memberships:,} segment memberships in {segment_count} segments")
        analyst = published.analyst
        how = f"; updated {', '.join(analyst.incremental)} in place" if analyst.incremental else ""
        print(
            f"  analyst database {analyst.path} "
            f"({analyst.bytes / 1_048_576:,.1f} MiB, {analyst.seconds:.1f} s{how})"
        )
        print(f"  report {published.report}")
    else:
        print("  (an earlier as-of than the latest build: history tables only)")


def _print_kpis(kpis: StoreKpis) -> None:
    currency = kpis.reporting_currency
    print(
        f"  AOV {_num(kpis.aov)} {currency}, purchase frequency {_num(kpis.purchase_frequency)}"
        f"/year, customer value {_num(kpis.customer_value)}, repeat rate {_pct(kpis.repeat_rate)}"
    )
    lifespan = f"{_num(kpis.lifespan_years)} years" + (
        " (default: history too short)" if kpis.lifespan_is_default else ""
    )
    print(f"  monthly churn {_pct(kpis.churn_rate_monthly)}, lifespan {lifespan}")
    print(
        f"  basic CLV {_num(kpis.basic_clv)} {currency}, "
        f"advanced CLV {_num(kpis.advanced_clv)} {currency}"
    )


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.2f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"
