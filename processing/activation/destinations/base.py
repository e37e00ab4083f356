"""What every destination type shares: the ``Delivery`` it is handed, the ``Confirm``
callback it reports acknowledgements through, the ``Context`` it may draw on, and
``Deliverer``, the base class of each type's deliverer."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Generic, TypeVar

import duckdb
import pyarrow as pa

from cdp.settings import Settings

# Called with the customer ids whose entry and exit the destination confirmed.
Confirm = Callable[[list[str], list[str]], None]

# A destination type's configuration model (cdp.processing.segmentation.config).
ConfigT = TypeVar("ConfigT")


@dataclass(frozen=True)
class Delivery:
    destination: str
    segment: str
    as_of: date
    export_run_id: int
    members: pa.Table  # customer_id, user_id, email, phone, email_sha256, phone_sha256, traits
    entered: pa.Table  # the same columns
    exited: pa.Table  # customer_id, email_sha256, phone_sha256
    traits: list[str]

    @property
    def idempotency_prefix(self) -> str:
        return f"{self.destination}/{self.segment}/{self.as_of.isoformat()}"


@dataclass(frozen=True)
class Context:
    """What a deliverer may use besides its own configuration."""

    con: duckdb.DuckDBPyConnection  # the export's connection, to reshape tables with SQL
    settings: Settings  # cdp's settings (the Kafka brokers, ...)
    out_dir: Path  # where relative folder paths of file destinations are rooted


class Deliverer(ABC, Generic[ConfigT]):
    """How one destination type delivers; an instance holds one configured destination."""

    def __init__(self, config: ConfigT) -> None:
        self.config = config

    @abstractmethod
    def deliver(self, delivery: Delivery, confirm: Confirm, context: Context) -> str:
        """Send ``delivery``, call ``confirm`` with what the destination acknowledged,
        and return where it went (a folder, a topic, a URL).

        A failure of the transport (disk, network, broker, receiver) is raised as a
        :class:`~cdp.errors.CdpError` — :class:`~cdp.errors.DeliveryError` unless a
        more precise one applies, such as :class:`~cdp.errors.DiskError` — so the
        export records this delivery as failed, keeps its diff and goes on with the
        others. Anything else is a bug, and propagates."""

    def folder_root(self, out_dir: Path) -> Path | None:
        """The folder under which it writes ``<segment>/<as-of>`` folders, if it writes
        any: staging leftovers of killed deliveries are removed there."""
        return None


def ids(table: pa.Table) -> list[str]:
    return table.column("customer_id").to_pylist()
