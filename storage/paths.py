"""Where cdp writes its files, all derived from the live database's path.

Given ``storage.db_path = shop.duckdb`` (and no ``storage.analyst_db_path``)::

    shop.duckdb                  the live database (one writer: ingest, builds)
    shop.analyst.duckdb          the analyst snapshot, replaced at each publish
    shop.analyst.events/         the Parquet parts its ``events`` view reads
    shop.report.html             the HTML report of the latest publish

Exports go to ``export.out_dir``, which has nothing to do with these.
"""

from __future__ import annotations

from pathlib import Path

from cdp.settings import Settings


def analyst_path(settings: Settings) -> Path:
    """``storage.analyst_db_path``, else ``<live name>.analyst.duckdb`` beside the live file."""
    configured = settings.storage.analyst_db_path
    if configured:
        return Path(configured)
    live = settings.storage.db_path
    return live.with_name(f"{live.stem}.analyst.duckdb")


def events_folder(snapshot: Path) -> Path:
    """The folder of Parquet parts beside an analyst snapshot (or its staging copy)."""
    return snapshot.with_name(f"{snapshot.stem}.events")


def report_path(settings: Settings) -> Path:
    """``<live name>.report.html`` beside the analyst database."""
    return analyst_path(settings).with_name(f"{settings.storage.db_path.stem}.report.html")
