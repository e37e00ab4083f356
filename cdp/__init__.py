"""cdp — a lightweight customer data platform event pipeline for online stores.

Store events stream into Kafka; ``cdp ingest`` validates them and writes them into
DuckDB exactly once. The public surface is small on purpose: the command line
(``cdp --help``), the settings model and the exception hierarchy. Everything else
lives in private-by-convention modules under ``cdp.ingest``, ``cdp.processing`` and
``cdp.storage``.
"""

from cdp.errors import (
    CdpError,
    ConfigError,
    IngestError,
    SchemaVersionError,
    StorageError,
    TransientError,
)

__version__ = "0.1.0"

__all__ = [
    "CdpError",
    "ConfigError",
    "IngestError",
    "SchemaVersionError",
    "StorageError",
    "TransientError",
    "__version__",
]
