"""Extract and normalize: events from Kafka topics or JSON-lines files into DuckDB.

Modules, by stage:

- ``events``      the event vocabulary and the pydantic models (the contract with stores)
- ``validation``  raw bytes -> accepted rows (Arrow) or dead letters with a reason
- ``validator_process``  the process that validates polled batches beside the poll
- ``broker``      the bundled local broker, and connecting to any broker
- ``topics``      topic creation
- ``producer``    JSON-lines file -> topics
- ``consumer``    topics -> DuckDB, exactly once (offsets stored with the rows)
- ``loader``      JSON-lines file -> DuckDB without Kafka (backfills)
- ``deadletters`` listing and replaying dead letters
- ``generator``   a seeded synthetic store for demos, tests and benchmarks
"""
