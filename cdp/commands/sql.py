"""``cdp sql`` (a query, printed as a table, CSV or JSON lines) and ``cdp shell``
(the duckdb CLI): both on the analyst database, read-only."""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys

import duckdb

from cdp.errors import CdpError
from cdp.settings import Settings
from cdp.status import existing_analyst_path, open_analyst


def sql(args: argparse.Namespace, settings: Settings) -> int:
    with open_analyst(settings) as con:
        try:
            relation = con.sql(args.query)
        except duckdb.Error as exc:
            raise CdpError(f"query failed: {exc}") from None
        if relation is None:
            print("ok (the statement returned no rows)")
            return 0
        if args.format == "table":
            relation.show(max_rows=args.max_rows, max_width=10_000)
            return 0
        columns, rows = relation.columns, relation.fetchall()
    if args.format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        for row in rows:
            print(json.dumps(dict(zip(columns, row, strict=True)), default=str))
    return 0


def shell(args: argparse.Namespace, settings: Settings) -> int:
    path = existing_analyst_path(settings)
    duckdb_cli = shutil.which("duckdb")
    if duckdb_cli is None:
        raise CdpError(
            "the duckdb command-line client is not installed "
            '(https://duckdb.org/docs/installation); `cdp sql "..."` queries the same '
            f"database, or open {path} read-only from any DuckDB client"
        )
    os.execv(duckdb_cli, [duckdb_cli, "-readonly", str(path)])
    return 0  # pragma: no cover - execv does not return
