"""The exceptions cdp raises on purpose.

Hierarchy::

    CdpError                    every error cdp raises deliberately; the CLI prints
    │                           its message and exits 2 instead of a traceback
    ├── ConfigError             a configuration value, file or CLI argument is wrong;
    │                           the message names the key and the problem (terminal)
    ├── StorageError            the DuckDB database cannot be used as asked (terminal)
    │   └── SchemaVersionError  the database was written by a newer cdp
    ├── IngestError             ingestion cannot go on (terminal)
    │   ├── BrokerError         the bundled broker could not be started
    │   └── OffsetOutOfRange    a stored offset lies outside its partition (the
    │                           broker lost data, or retention deleted it unread);
    │                           the message says how to reset (ingest.offset_reset)
    ├── ServiceError            a part of `cdp run` died; the service exits non-zero
    ├── ExportError             an export cannot run as asked, e.g. nothing built yet
    │   └── DeliveryError       a destination did not confirm a delivery; its diff
    │                           is kept and sent at the next export
    └── TransientError          worth retrying as is: a broker not reachable yet
        ├── DatabaseLocked      another process has the database open for writing
        └── DiskError           the disk is full or failed; retry once space is
                                freed (nothing was half-written)

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


class OffsetOutOfRange(IngestError):
    """A stored offset lies past its partition's end or before its start."""


class ServiceError(CdpError):
    """A part of the long-running service died; it must not go on half-alive."""


class ExportError(CdpError):
    """An export cannot run as asked."""


class DeliveryError(ExportError):
    """A destination did not confirm a delivery (after retries, where they apply)."""


class TransientError(CdpError):
    """A failure that may go away if the same operation is retried."""


class DatabaseLocked(TransientError):
    """Another process holds the database for writing (DuckDB allows one writer)."""


class DiskError(TransientError):
    """Writing a file failed for lack of space or an I/O error; nothing was half-written.

    Raised by the storage layer (``cdp.storage.disk.storage_errors``: transactions,
    opening and migrating the database, the analyst publish, the report) in place of
    DuckDB's ``IOException`` / ``TransactionException`` / ``FatalException`` or an
    ``OSError`` with errno ENOSPC, EDQUOT or EIO. The message starts with the file
    (the database, the analyst database, the report), then says "disk full", "disk
    quota exceeded" or "I/O error" and what DuckDB or the OS said in brackets.
    """
