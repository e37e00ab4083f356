"""The store KPIs a build wrote (``store_kpis``, computed by the clv stage), read back
as a :class:`StoreKpis` for whoever prints or reports them."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import date

import duckdb


@dataclass(frozen=True)
class StoreKpis:
    """One build date's row of ``store_kpis`` (the columns people read; the data
    dictionary describes every one). Rates and money are None where the window
    had nothing to compute them from."""

    as_of: date
    reporting_currency: str
    customers: int | None
    buyers: int | None
    aov: float | None
    purchase_frequency: float | None
    customer_value: float | None
    repeat_rate: float | None
    churn_rate_monthly: float | None
    lifespan_years: float | None
    lifespan_is_default: bool | None
    basic_clv: float | None
    advanced_clv: float | None


# The columns are the dataclass's fields, in its order: constants, not input.
_COLUMNS = ", ".join(field.name for field in fields(StoreKpis))


def read_store_kpis(con: duckdb.DuckDBPyConnection, day: date | None = None) -> StoreKpis | None:
    """The KPIs of the build as of ``day``, else of the latest build; None when
    there is no such build."""
    if day is None:
        rows = con.execute(f"SELECT {_COLUMNS} FROM store_kpis ORDER BY as_of DESC LIMIT 1")
    else:
        rows = con.execute(f"SELECT {_COLUMNS} FROM store_kpis WHERE as_of = $day", {"day": day})
    found = rows.fetchall()
    return StoreKpis(*found[0]) if found else None
