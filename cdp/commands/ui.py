"""``cdp ui``: the customer explorer over the analyst database, until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

from cdp.commands.common import stop_on_signals
from cdp.errors import ServiceError
from cdp.settings import Settings
from cdp.storage.paths import analyst_path, report_path
from cdp.ui.server import UiServer

_ANALYST_SUFFIX = ".analyst.duckdb"


def ui_paths(settings: Settings) -> tuple[Path, Path]:
    """The analyst database and the report: from the live database's path as every
    command derives them, or ``--db`` naming the analyst file itself."""
    db = settings.storage.db_path
    if db.name.endswith(_ANALYST_SUFFIX) and not settings.storage.analyst_db_path:
        stem = db.name[: -len(_ANALYST_SUFFIX)]
        return db, db.with_name(f"{stem}.report.html")
    return analyst_path(settings), report_path(settings)


def ui(args: argparse.Namespace, settings: Settings) -> int:
    analyst, report = ui_paths(settings)
    server = UiServer(settings, analyst, report)
    stop = threading.Event()
    stop_on_signals(stop)
    server.start()
    print(f"cdp ui: serving {analyst} on {server.url}/customers (Ctrl-C stops)", flush=True)
    if not analyst.exists():
        print(f"  no analyst database at {analyst} yet: pages say so until a build publishes")
    try:
        while not stop.wait(0.5):
            if not server.alive:
                raise ServiceError(f"cdp ui stopped: {server.error}")
    finally:
        server.stop()
    return 0
