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

SEGMENTS = (
    "Champions", "Loyal", "Potential loyalist", "New", "Promising", "Need attention",
    "About to sleep", "At risk", "Can't lose them", "Hibernating", "Lost",
)  # fmt: skip

_SCORE = """
CREATE OR REPLACE TEMP TABLE build_rfm AS
WITH base AS (
    SELECT p.customer_id,
           date_diff('day', p.last_order_at, $as_of) AS recency_days,
           count(o.order_id) FILTER (
               WHERE NOT o.cancelled AND o.ordered_at > $as_of - to_days($window))
               AS frequency,
           coalesce(sum(o.gross - o.refunded)
               FILTER (WHERE o.ordered_at > $as_of - to_days($window)), 0) AS monetary
    FROM build_profiles p JOIN order_facts o USING (customer_id)
    WHERE p.orders > 0
    GROUP BY ALL
),
ranked AS (  -- ranked against the other buyers of the window only
    SELECT *,
           count(*) OVER () AS n,
           rank() OVER (ORDER BY recency_days DESC) AS recency_rank,
           rank() OVER (ORDER BY frequency) AS frequency_rank,
           rank() OVER (ORDER BY monetary) AS monetary_rank
    FROM base WHERE frequency > 0
),
scored AS (
    SELECT customer_id, recency_days, frequency, monetary,
           CASE WHEN $window_recency
                THEN greatest(1, $k - floor(recency_days * $k / $window)::INTEGER)
                ELSE 1 + floor($k * (recency_rank - 1) / n)::INTEGER END AS r,
           1 + floor($k * (frequency_rank - 1) / n)::INTEGER AS f,
           1 + floor($k * (monetary_rank - 1) / n)::INTEGER AS m
    FROM ranked
    UNION ALL  -- bought before, but not within the window: the lowest scores
    SELECT customer_id, recency_days, frequency, monetary, 1, 1, 1 FROM base WHERE frequency = 0
),
five AS (  -- segment rules are written on the 1-5 scale
    SELECT *, CASE WHEN $k = 3 THEN 2 * r - 1 ELSE r END AS r5,
              CASE WHEN $k = 3 THEN 2 * f - 1 ELSE f END AS f5
    FROM scored
)
SELECT customer_id, recency_days, frequency, monetary,
       r AS recency_score, f AS frequency_score, m AS monetary_score,
       r::VARCHAR || f::VARCHAR || m::VARCHAR AS cell, r + f + m AS total,
       CASE
           WHEN r5 = 5 AND f5 >= 4 THEN 'Champions'
           WHEN r5 BETWEEN 3 AND 4 AND f5 >= 4 THEN 'Loyal'
           WHEN r5 = 5 AND f5 = 1 THEN 'New'
           WHEN r5 = 4 AND f5 = 1 THEN 'Promising'
           WHEN r5 >= 4 AND f5 BETWEEN 2 AND 3 THEN 'Potential loyalist'
           WHEN r5 = 3 AND f5 = 3 THEN 'Need attention'
           WHEN r5 = 3 AND f5 <= 2 THEN 'About to sleep'
           WHEN r5 <= 2 AND f5 = 5 THEN 'Can''t lose them'
           WHEN r5 <= 2 AND f5 >= 3 THEN 'At risk'
           WHEN r5 = 1 AND f5 = 1 THEN 'Lost'
           ELSE 'Hibernating'
       END AS segment
FROM five;

"""

RFM_COLUMNS = ProfileColumns(
    """s.recency_days::INTEGER AS rfm_recency_days, s.frequency::BIGINT AS rfm_frequency,
       s.monetary::DECIMAL(18, 4) AS rfm_monetary,
       s.recency_score::INTEGER AS rfm_recency_score,
       s.frequency_score::INTEGER AS rfm_frequency_score,
       s.monetary_score::INTEGER AS rfm_monetary_score, s.cell AS rfm_cell,
       s.total::INTEGER AS rfm_score, s.segment AS rfm_segment""",
    "LEFT JOIN build_rfm s ON s.customer_id = p.customer_id",
)


def score_rfm(con: duckdb.DuckDBPyConnection, settings: Settings, as_of: datetime) -> None:
    """Score the buyers of ``build_profiles`` into ``build_rfm``, for ``RFM_COLUMNS``
    (needs ``order_facts`` from the profile stage)."""
    rfm = settings.rfm
    execute_script(
        con,
        _SCORE,
        {
            "as_of": as_of,
            "window": rfm.window_days,
            "k": rfm.scores,
            "window_recency": rfm.recency_scoring == "window",
        },
    )
