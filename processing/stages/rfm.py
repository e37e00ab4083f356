"""RFM: recency, frequency, monetary scores and the 11 named segments.

Buyers only (at least one order ever). Recency is the days since the last order;
frequency and monetary are orders and net revenue within ``rfm.window_days`` — one
consistent window, as the source material asks. Buyers are ranked against the other
buyers of that window; those who bought before but not within it score 1-1-1
(Lost).

Scores run 1 (worst) to ``rfm.scores`` (3 or 5). A quantile score is
``1 + floor(k × (rank − 1) / n)`` over buyers ranked worst to best, with ties sharing
the lowest rank, so equal values always get equal scores and a population smaller
than ``k`` simply uses fewer scores (a single buyer scores 1). With
``rfm.recency_scoring = "window"`` recency is instead scored by equal slices of the
window: with 3 scores and 365 days, within 4 months → 3, 4–8 months → 2, older → 1.

Segments come from the recency and frequency scores on a 1–5 scale (3-point scores
map to 1, 3, 5); the first matching rule wins:

==============  ==========================
R               F            segment
==============  ==========================
5               4–5          Champions
3–4             4–5          Loyal
5               1            New
4               1            Promising
4–5             2–3          Potential loyalist
3               3            Need attention
3               1–2          About to sleep
1–2             5            Can't lose them
1–2             3–4          At risk
1               1            Lost
1–2             1–2          Hibernating
==============  ==========================
"""

from __future__ import annotations

from datetime import datetime

import duckdb

from cdp.processing.stages.profiles import ProfileColumns
from cdp.settings import Settings
from cdp.storage.database import execute_script
from cdp.storage.sql import read_sql

SEGMENTS = (
    "Champions",
    "Loyal",
    "Potential loyalist",
    "New",
    "Promising",
    "Need attention",
    "About to sleep",
    "At risk",
    "Can't lose them",
    "Hibernating",
    "Lost",
)

RFM_COLUMNS = ProfileColumns(
    """s.recency_days::INTEGER AS rfm_recency_days, s.frequency::BIGINT AS rfm_frequency,
       s.monetary::DECIMAL(18, 4) AS rfm_monetary,
       s.recency_score::INTEGER AS rfm_recency_score,
       s.frequency_score::INTEGER AS rfm_frequency_score,
       s.monetary_score::INTEGER AS rfm_monetary_score, s.cell AS rfm_cell,
       s.total::INTEGER AS rfm_score, s.segment AS rfm_segment""",
    "LEFT JOIN build_rfm s ON s.customer_id = p.customer_id",
    name="rfm.RFM_COLUMNS",
)


def score_rfm(con: duckdb.DuckDBPyConnection, settings: Settings, as_of: datetime) -> None:
    """Score the buyers of ``build_profiles`` into ``build_rfm``, for ``RFM_COLUMNS``
    (needs ``order_facts`` from the profile stage)."""
    rfm = settings.rfm
    execute_script(
        con,
        read_sql("cdp.processing.stages", "rfm_scores.sql"),
        {
            "as_of": as_of,
            "window": rfm.window_days,
            "k": rfm.scores,
            "window_recency": rfm.recency_scoring == "window",
        },
    )
