"""Load: the DuckDB schema, its migrations, connections and the writes that must be atomic.

- ``database``     opening the database (always migrated), transactions that roll back
- ``migrations``   versioned, idempotent schema changes (``migrations/NNNN_name.sql``)
- ``event_store``  writing a validated batch with its consumed offsets in one transaction
"""
