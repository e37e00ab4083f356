"""The ``files`` destination: ``members``, ``entered`` and ``exited`` as CSV, Parquet
and JSON lines (the configured ``formats``) in ``<path>/<segment>/<as-of>/``, with
``manifest.json`` (see :mod:`.folders`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from cdp.processing.activation.destinations.base import Context, Delivery
from cdp.processing.activation.destinations.folders import FolderDeliverer
from cdp.processing.segmentation.config import FilesDestination
from cdp.storage.sql import quote_identifier


class FilesDeliverer(FolderDeliverer[FilesDestination]):
    def prepare(self, delivery: Delivery, context: Context) -> Callable[[Path], None]:
        con = context.con
        members = _with_trait_columns(con, delivery.members, delivery.traits)
        entered = _with_trait_columns(con, delivery.entered, delivery.traits)
        tables = {"members": members, "entered": entered, "exited": delivery.exited}
        # JSON lines keep the traits nested and typed; CSV and Parquet get flat columns.
        originals = {
            "members": delivery.members,
            "entered": delivery.entered,
            "exited": delivery.exited,
        }
        jsonl = {name: _json_lines(con, table) for name, table in originals.items()}
        formats = self.config.formats

        def write(folder: Path) -> None:
            for name, table in tables.items():
                if "csv" in formats:
                    pa_csv.write_csv(table, folder / f"{name}.csv")
                if "parquet" in formats:
                    pq.write_table(table, folder / f"{name}.parquet")
                if "jsonl" in formats:
                    (folder / f"{name}.jsonl").write_text(jsonl[name], encoding="utf-8")

        return write


def _with_trait_columns(
    con: duckdb.DuckDBPyConnection, table: pa.Table, traits: list[str]
) -> pa.Table:
    """Flat columns for tabular files: each trait as text (lists as JSON arrays)."""
    columns = ", ".join(
        f"json_extract_string(traits, $t{i}) AS {quote_identifier(trait)}"
        for i, trait in enumerate(traits)
    )
    params = {f"t{i}": f'$."{trait}"' for i, trait in enumerate(traits)}
    con.register("export_rows", table)
    try:
        return con.sql(
            "SELECT customer_id, user_id, email, phone"
            + (f", {columns}" if columns else "")
            + " FROM export_rows ORDER BY customer_id",
            params=params or None,
        ).to_arrow_table()
    finally:
        con.unregister("export_rows")


def _json_lines(con: duckdb.DuckDBPyConnection, table: pa.Table) -> str:
    """One JSON object per row, traits nested as they are."""
    con.register("export_rows", table)
    try:
        rows = con.sql(
            "SELECT to_json(r) FROM export_rows r ORDER BY customer_id"
            if "traits" not in table.column_names
            else "SELECT to_json({'customer_id': customer_id, 'user_id': user_id, 'email': email,"
            " 'phone': phone, 'traits': json(traits)}) FROM export_rows ORDER BY customer_id"
        ).fetchall()
    finally:
        con.unregister("export_rows")
    return "".join(f"{row[0]}\n" for row in rows)
