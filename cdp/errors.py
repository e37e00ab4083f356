"""The exceptions cdp raises on purpose.

Hierarchy::

    CdpError                    every error cdp raises deliberately; the CLI prints
    │                           its message and exits 2 instead of a traceback
    ├── ConfigError             a configuration value, file or CLI argument is wrong;
    │                           the message names the key and the problem (terminal)
    ├── StorageError            the DuckDB database cannot be used as asked (terminal)
    │   └── SchemaVersionError  the database was written by a newer cdp
    ├── IngestError             ingestion cannot go on (terminal)
    │   └── BrokerError         the bundled broker could not be started
    ├── ExportError             an export cannot run as asked, e.g. nothing built yet
    │   └── DeliveryError       a destination did not confirm a delivery; its diff
    │                           is kept and sent at the next export
    └── TransientError          worth retrying as is: a broker not reachable yet,
                                a lock held by another process

Bad *events* are not exceptions: they are data, and land in ``dead_letters``
with a reason (see ``cdp.ingest.validation``).
"""


class CdpError(Exception):
    """Base of every error cdp raises deliberately."""


class ConfigError(CdpError):
    """A configuration value, file or command-line argument is invalid."""


class StorageError(CdpError):
    """The database cannot be used as asked."""


class SchemaVersionError(StorageError):
    """The database schema is newer than this version of cdp understands."""


class IngestError(CdpError):
    """Ingestion cannot continue."""


class BrokerError(IngestError):
    """The bundled local broker could not be started."""


class ExportError(CdpError):
    """An export cannot run as asked."""


class DeliveryError(ExportError):
    """A destination did not confirm a delivery (after retries, where they apply)."""


class TransientError(CdpError):
    """A failure that may go away if the same operation is retried."""
