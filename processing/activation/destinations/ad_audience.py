"""The ``ad_audience`` destination: ``audience_full.csv``, ``audience_add.csv`` and
``audience_remove.csv`` in ``<path>/<segment>/<as-of>/`` (see :mod:`.folders`), with
the columns ``email`` and ``phone`` holding SHA-256 hex digests of the trimmed,
lower-case email and of the phone in E.164 — what Meta and Google customer-list
uploads accept for pre-hashed data. The export computes the digests; the phone's
default country code is this destination's ``default_country_code``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv

from cdp.processing.activation.destinations.base import Context, Delivery
from cdp.processing.activation.destinations.folders import FolderDeliverer
from cdp.processing.segmentation.config import AudienceDestination


class AudienceDeliverer(FolderDeliverer[AudienceDestination]):
    def prepare(self, delivery: Delivery, context: Context) -> Callable[[Path], None]:
        con = context.con

        def hashed(table: pa.Table) -> pa.Table:
            con.register("audience_rows", table)
            try:
                return con.sql(
                    "SELECT email_sha256 AS email, phone_sha256 AS phone FROM audience_rows "
                    "WHERE email_sha256 IS NOT NULL OR phone_sha256 IS NOT NULL"
                ).to_arrow_table()
            finally:
                con.unregister("audience_rows")

        tables = {
            "audience_full": hashed(delivery.members),
            "audience_add": hashed(delivery.entered),
            "audience_remove": hashed(delivery.exited),
        }

        def write(folder: Path) -> None:
            for name, table in tables.items():
                pa_csv.write_csv(table, folder / f"{name}.csv")

        return write
