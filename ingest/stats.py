"""What ``cdp ingest`` and ``cdp load`` report: counts of the batches stored so far.

A module of its own so that ``cdp load`` need not import the Kafka consumer (and
kafka-python: ~0.17 s of its start-up).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from cdp.ingest.validation import ValidatedBatch
from cdp.storage.event_store import WriteResult


@dataclass
class IngestStats:
    consumed: int = 0
    stored: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    batches: int = 0
    dead_letter_kinds: dict[str, int] = field(default_factory=dict)
    started_at: float = field(default_factory=time.monotonic)
    # Seconds from poll to commit of the last stored batch; when it was stored.
    last_batch_latency_s: float | None = None
    last_stored_at: float | None = None

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started_at

    def record(self, validated: ValidatedBatch, result: WriteResult) -> None:
        self.batches += 1
        self.consumed += validated.consumed
        self.stored += result.stored
        self.duplicates += result.duplicates
        self.dead_lettered += validated.dead_letters.num_rows
        for kind, count in validated.dead_letter_kinds.items():
            self.dead_letter_kinds[kind] = self.dead_letter_kinds.get(kind, 0) + count
