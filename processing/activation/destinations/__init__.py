"""Destinations: how one segment's export reaches files, ad-platform audience files,
a Kafka topic or a webhook — one module per destination type, named after the
configuration's ``type``: ``files``, ``ad_audience`` (both write folders, see
``folders``), ``kafka`` and ``webhook`` (both send messages, see ``messages``).

Each deliverer gets a ``Delivery`` — the segment's consented members (the full
snapshot), who entered and who exited since the destination's last confirmed state —
and calls ``confirm`` for what the destination has acknowledged; the export module
advances the destination's state only from those confirmations. Anything not
confirmed is in the next diff, so a destination that was down loses nothing.

Adding a destination type ``x``:

1. its configuration: a model with ``type: Literal["x"]`` in
   ``cdp.processing.segmentation.config``, added to the ``Destination`` union;
2. ``destinations/x.py``: a subclass of ``base.Deliverer`` (``folders.FolderDeliverer``
   for a folder of files) whose ``deliver`` sends, confirms and returns where it went;
3. one line in ``DELIVERERS`` below, and its tests in
   ``tests/processing/activation/destinations/test_x.py``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import duckdb

from cdp.processing.activation.destinations.ad_audience import AudienceDeliverer
from cdp.processing.activation.destinations.base import Confirm, Context, Deliverer, Delivery
from cdp.processing.activation.destinations.files import FilesDeliverer
from cdp.processing.activation.destinations.folders import remove_leftovers
from cdp.processing.activation.destinations.kafka import KafkaDeliverer
from cdp.processing.activation.destinations.webhook import (
    RETRY_AFTER_MAX_S,
    WebhookDeliverer,
    backoff_s,
    retry_after_s,
)
from cdp.processing.segmentation.config import Destination
from cdp.settings import Settings

__all__ = [
    "DELIVERERS",
    "RETRY_AFTER_MAX_S",
    "Confirm",
    "Context",
    "Deliverer",
    "Delivery",
    "backoff_s",
    "deliver",
    "deliverer_for",
    "remove_staging_leftovers",
    "retry_after_s",
]

# A destination's configured ``type`` -> its deliverer.
DELIVERERS: dict[str, type[Deliverer[Any]]] = {
    "files": FilesDeliverer,
    "ad_audience": AudienceDeliverer,
    "kafka": KafkaDeliverer,
    "webhook": WebhookDeliverer,
}


def deliverer_for(destination: Destination) -> Deliverer[Any]:
    """The deliverer of a configured destination."""
    return DELIVERERS[destination.type](destination)


def deliver(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    destination: Destination,
    delivery: Delivery,
    confirm: Confirm,
    out_dir: Path,
) -> str:
    """Send ``delivery``; return where it went (folder, topic or URL)."""
    return deliverer_for(destination).deliver(delivery, confirm, Context(con, settings, out_dir))


def remove_staging_leftovers(destinations: Iterable[Destination], out_dir: Path) -> list[Path]:
    """Delete the hidden folders a killed delivery left under each destination of
    ``destinations`` that writes folders (``files``, ``ad_audience``); return them.

    They hold member files — personal data — that nothing else would ever remove. Any
    segment's folder is searched, including those of segments no longer configured.
    Only the process that holds the database for writing exports, so when it starts
    an export no other delivery is writing them."""
    roots = (deliverer_for(d).folder_root(out_dir) for d in destinations)
    return remove_leftovers(root for root in roots if root is not None)
