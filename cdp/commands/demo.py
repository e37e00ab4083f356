"""``cdp demo``: a bundled broker, a synthetic store streamed through it, a build."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from cdp.demo import run_demo
from cdp.settings import Settings
from cdp.storage.database import connect
from cdp.summary import database_summary


def demo(args: argparse.Namespace, settings: Settings) -> int:
    if args.db is None:
        settings = _with_db(settings, Path("cdp-demo.duckdb"))
    result = run_demo(
        settings, customers=args.customers, seed=args.seed, end=args.end, replace=args.force
    )
    with connect(result.db_path) as con:
        print()
        print(database_summary(con))
    print()
    print(f"database:          {result.db_path.resolve()}")
    print(f"analyst database:  {result.analyst_db.resolve()}")
    print(f"report:            {result.report.resolve()}")
    print(f"segment exports:   {settings.export.out_dir.resolve()}")
    db = f" --db {result.db_path}" if args.db is None else ""
    query = "SELECT rfm_segment, count(*) FROM customer_profiles GROUP BY 1"
    print(f'query it: {_program_name()} sql "{query}"{db}')
    print(
        f"explore it in a browser: {_program_name()} ui --db {result.db_path}   "
        f"then open http://{settings.ui.listen}/customers"
    )
    return 0


def _program_name() -> str:
    """How the user can run cdp again: e.g. .venv/bin/cdp when it is not on PATH."""
    invoked = Path(sys.argv[0])
    if invoked.name != "cdp" or shutil.which("cdp") == str(invoked.resolve()):
        return "cdp"
    try:
        return str(invoked.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(invoked)


def _with_db(settings: Settings, path: Path) -> Settings:
    return settings.model_copy(
        update={"storage": settings.storage.model_copy(update={"db_path": path})}
    )
