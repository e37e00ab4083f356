"""The HTML report: one self-contained file, regenerated after every published build.

Read from the analyst database just published (so it shows exactly that snapshot)
and written beside it as ``<db name>.report.html``: inline CSS and SVG, no script
or font from the network. Charts: CLV distribution (historic and predicted), the
RFM heatmap (recency × frequency coloured by monetary), segment sizes over time, the
monthly cohort retention triangle, funnel conversion, top products by CLV
contribution, the store KPIs with their trend, and how good predicted CLV is (the
latest backtest, :mod:`cdp.processing.report.backtest`).

A short inline script marks each chart with the size the browser laid it out at
(``data-rendered``), which the report's browser test reads back.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from pathlib import Path

import duckdb

from cdp.processing.report import charts
from cdp.processing.report.backtest import backtest_section
from cdp.storage.database import connect
from cdp.storage.disk import storage_errors

# Each customer's CLV is shared equally among the distinct products they bought.
_PRODUCT_CONTRIBUTION = """
WITH bought AS (
    SELECT DISTINCT customer_id, unnest(product_ids) AS product_id
    FROM orders WHERE NOT cancelled
),
shares AS (SELECT customer_id, count(*) AS products FROM bought GROUP BY 1)
SELECT b.product_id, sum(p.historic_clv / s.products)::DOUBLE AS contribution
FROM bought b JOIN shares s USING (customer_id) JOIN customer_profiles p USING (customer_id)
WHERE b.product_id IS NOT NULL
GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10
"""

# Share of each first-order-month cohort that ordered again N months later.
_COHORTS = """
WITH ordered AS (
    SELECT DISTINCT customer_id, date_trunc('month', ordered_at)::DATE AS month
    FROM orders WHERE NOT cancelled
),
firsts AS (SELECT customer_id, min(month) AS cohort FROM ordered GROUP BY 1),
sizes AS (SELECT cohort, count(*) AS n FROM firsts GROUP BY 1)
SELECT f.cohort, date_diff('month', f.cohort, o.month) AS months_after,
       count(DISTINCT o.customer_id) / any_value(s.n) AS retained, any_value(s.n) AS size
FROM firsts f JOIN ordered o USING (customer_id) JOIN sizes s USING (cohort)
WHERE f.cohort >= (SELECT max(cohort) FROM firsts) - INTERVAL 11 MONTH
GROUP BY ALL ORDER BY ALL
"""

# One grouped pass: four filtered DISTINCT aggregates took three times as long.
_FUNNEL = """
SELECT type, count(DISTINCT coalesce(user_id, anonymous_id)) AS visitors
FROM events
WHERE type IN ('product_viewed', 'product_added', 'checkout_started', 'order_completed')
  AND occurred_at > (SELECT max(as_of) FROM customer_profiles) - INTERVAL 365 DAY
GROUP BY type
"""

_KPIS = (
    "aov",
    "purchase_frequency",
    "repeat_rate",
    "churn_rate_monthly",
    "basic_clv",
    "advanced_clv",
    "customers",
    "revenue",
)

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f3f4f6;
color:#111827}header{background:#111827;color:#fff;padding:18px 28px}h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#d1d5db;font-size:13px}main{display:grid;grid-template-columns:
repeat(auto-fit,minmax(560px,1fr));gap:18px;padding:18px 28px}.chart{background:#fff;
border-radius:10px;padding:14px 18px;box-shadow:0 1px 3px rgba(0,0,0,.08)}h2{font-size:15px;
margin:0 0 4px}.note{font-size:12px;color:#6b7280;margin:0 0 8px}svg{width:100%;height:auto}
table{border-collapse:collapse;width:100%;font-size:13px}td,th{padding:4px 6px;text-align:left;
border-bottom:1px solid #e5e7eb}td.num{text-align:right;font-variant-numeric:tabular-nums}
"""

_MEASURE = """
document.querySelectorAll('.chart').forEach(function (chart) {
  var width = 0, height = 0, marks = 0;
  chart.querySelectorAll('svg').forEach(function (svg) {
    var box = svg.getBoundingClientRect();
    width = Math.max(width, box.width); height += box.height;
    svg.querySelectorAll('.mark').forEach(function (m) {
      var r = m.getBoundingClientRect(); if (r.width > 0 || r.height > 0) marks += 1; });
  });
  chart.setAttribute('data-rendered', Math.round(width) + 'x' + Math.round(height) + ':' + marks);
});
"""


def write_report(analyst_db: Path, out: Path) -> Path:
    """Render the report from ``analyst_db`` into ``out`` (replaced atomically). A
    full disk is a :class:`~cdp.errors.DiskError` naming ``out``, and leaves the
    previous report in place and no half-written staging file."""
    with connect(analyst_db, read_only=True) as con:
        page = render(con)
    staging = out.with_name(f".{out.name}.tmp")
    try:
        with storage_errors(out):
            staging.write_text(page, encoding="utf-8")
            staging.replace(out)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
    return out


def render(con: duckdb.DuckDBPyConnection) -> str:
    as_of = con.execute("SELECT max(as_of) FROM customer_profiles").fetchall()[0][0]
    currency_row = con.execute(
        "SELECT reporting_currency FROM store_kpis ORDER BY as_of DESC LIMIT 1"
    ).fetchall()
    currency = currency_row[0][0] if currency_row else ""
    customers = con.execute("SELECT count(*) FROM customer_profiles").fetchall()[0][0]
    backtest_note, backtest_body = backtest_section(con)
    sections = [
        _section(
            "kpis",
            "Store KPIs and their trend",
            "Latest build, with one point per build date.",
            _kpis(con),
        ),
        _section(
            "clv-distribution",
            "CLV distribution",
            f"Buyers by historic and predicted CLV ({currency}); "
            "the top 1% is left out of the range.",
            _clv_distribution(con),
        ),
        _section("clv-backtest", "How good is predicted CLV?", backtest_note, backtest_body),
        _section(
            "rfm-heatmap",
            "RFM heatmap",
            "Buyers by recency × frequency score, coloured by average monetary value "
            "(label: customers).",
            _rfm(con),
        ),
        _section(
            "segment-sizes",
            "Segment sizes over time",
            "Members per segment at each build date.",
            _segment_sizes(con),
        ),
        _section(
            "cohort-retention",
            "Monthly cohort retention",
            "Share of each first-order cohort ordering again N months later (last 12 cohorts).",
            _cohorts(con),
        ),
        _section(
            "funnel",
            "Funnel conversion",
            "Distinct visitors at each step over the last 365 days.",
            _funnel(con),
        ),
        _section(
            "top-products",
            "Top products by CLV contribution",
            f"Each customer's historic CLV shared equally among the products they bought "
            f"({currency}).",
            _products(con),
        ),
    ]
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    shown_as_of = f"{as_of:%Y-%m-%d %H:%M} UTC" if as_of else "no build yet"
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>cdp report — {escape(shown_as_of)}</title><style>{_STYLE}</style></head><body>"
        f"<header><h1>Customer data report</h1><p>As of {escape(shown_as_of)} · "
        f"{customers:,} customers · generated {generated}</p></header>"
        f"<main>{''.join(sections)}</main><script>{_MEASURE}</script></body></html>"
    )


def _section(key: str, title: str, note: str, body: str) -> str:
    return (
        f'<section class="chart" data-chart="{key}"><h2>{escape(title)}</h2>'
        f'<p class="note">{escape(note)}</p>{body}</section>'
    )


def _kpis(con: duckdb.DuckDBPyConnection) -> str:
    rows = con.execute(
        f"SELECT as_of, {', '.join(_KPIS)} FROM store_kpis ORDER BY as_of"
    ).fetchall()
    if not rows:
        return "<p>No build yet.</p>"
    lines = []
    for index, name in enumerate(_KPIS, start=1):
        history = [None if row[index] is None else float(row[index]) for row in rows]
        value = history[-1]
        if value is None:
            shown = "n/a"
        elif name.endswith("rate") or name.startswith("churn"):
            shown = f"{value:.1%}"
        else:
            shown = charts.fmt(value)
        lines.append(
            f'<tr><th>{escape(name.replace("_", " "))}</th><td class="num">{escape(shown)}</td>'
            f"<td>{charts.sparkline(history, name)}</td></tr>"
        )
    trend = charts.line_chart(
        [str(row[0]) for row in rows],
        {
            "basic CLV": [_f(row[5]) for row in rows],
            "advanced CLV": [_f(row[6]) for row in rows],
            "AOV": [_f(row[1]) for row in rows],
        },
        "CLV and AOV per build date",
    )
    return f"<table>{''.join(lines)}</table>{trend}"


# Buyers per bin of historic and predicted CLV: 20 equal bins up to the 99th
# percentile of both, counted in SQL (a million buyers never cross into Python).
_CLV_BINS = """
WITH buyers AS (
    SELECT historic_clv::DOUBLE AS historic, predicted_clv AS predicted
    FROM customer_profiles WHERE orders > 0
),
top AS (
    SELECT coalesce(nullif(quantile_disc(v, 0.99), 0), 1) AS high
    FROM (SELECT historic AS v FROM buyers UNION ALL SELECT predicted FROM buyers)
    WHERE isfinite(v)
),
binned AS (
    SELECT 'historic' AS series, least(floor(historic / high * $bins), $bins - 1) AS bin
    FROM buyers, top WHERE historic BETWEEN 0 AND high
    UNION ALL
    SELECT 'predicted', least(floor(predicted / high * $bins), $bins - 1)
    FROM buyers, top WHERE predicted BETWEEN 0 AND high
)
SELECT (SELECT high FROM top), series, bin::INTEGER, count(*) FROM binned GROUP BY ALL
"""


def _clv_distribution(con: duckdb.DuckDBPyConnection) -> str:
    bins = 20
    rows = con.execute(_CLV_BINS, {"bins": bins}).fetchall()
    if not rows:
        return "<p>No buyers yet.</p>"
    high = rows[0][0]
    counts = {"historic": [0] * bins, "predicted": [0] * bins}
    for _, series, index, count in rows:
        counts[series][index] = count
    return charts.histogram(
        [high * i / bins for i in range(bins + 1)],
        {"historic CLV": counts["historic"], "predicted CLV": counts["predicted"]},
        "CLV distribution",
    )


def _rfm(con: duckdb.DuckDBPyConnection) -> str:
    rows = con.execute(
        "SELECT rfm_recency_score, rfm_frequency_score, avg(rfm_monetary)::DOUBLE, count(*) "
        "FROM customer_profiles WHERE rfm_recency_score IS NOT NULL GROUP BY ALL"
    ).fetchall()
    if not rows:
        return "<p>No RFM scores yet.</p>"
    scores = [str(s) for s in range(1, max(max(r[0], r[1]) for r in rows) + 1)]
    cells = {(str(r), str(f)): (monetary or 0.0, f"{n:,}") for r, f, monetary, n in rows}
    return charts.heatmap(
        list(reversed(scores)), scores, cells, "RFM heatmap", "recency", "frequency score →"
    )


def _segment_sizes(con: duckdb.DuckDBPyConnection) -> str:
    rows = con.execute("SELECT as_of, segment, members FROM segment_sizes ORDER BY ALL").fetchall()
    if not rows:
        return "<p>No segments yet.</p>"
    dates = sorted({row[0] for row in rows})
    series: dict[str, list[float | None]] = {}
    for day, segment, members in rows:
        series.setdefault(segment, [None] * len(dates))[dates.index(day)] = float(members)
    return charts.line_chart([str(d) for d in dates], series, "Segment sizes over time")


def _cohorts(con: duckdb.DuckDBPyConnection) -> str:
    rows = con.execute(_COHORTS).fetchall()
    if not rows:
        return "<p>No orders yet.</p>"
    labels = {cohort: f"{cohort:%Y-%m} ({size:,})" for cohort, _, _, size in rows}
    columns = [str(m) for m in range(max(row[1] for row in rows) + 1)]
    cells = {(labels[c], str(m)): (share, f"{share:.0%}") for c, m, share, _ in rows}
    return charts.heatmap(
        [labels[cohort] for cohort in sorted(labels)],
        columns,
        cells,
        "Cohort retention",
        "cohort",
        "months after first order →",
    )


def _funnel(con: duckdb.DuckDBPyConnection) -> str:
    visitors = dict(con.execute(_FUNNEL).fetchall())
    steps = ["viewed a product", "added to cart", "started checkout", "ordered"]
    types = ["product_viewed", "product_added", "checkout_started", "order_completed"]
    counts = [visitors.get(event_type, 0) for event_type in types]
    viewed = counts[0]
    labels = [
        f"{step} ({count / viewed:.0%})" if viewed else step
        for step, count in zip(steps, counts, strict=True)
    ]
    return charts.bar_chart(labels, [float(c) for c in counts], "Funnel conversion")


def _products(con: duckdb.DuckDBPyConnection) -> str:
    rows = con.execute(_PRODUCT_CONTRIBUTION).fetchall()
    if not rows:
        return "<p>No orders with products yet.</p>"
    return charts.bar_chart([r[0] for r in rows], [r[1] for r in rows], "Top products by CLV")


def _f(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]
