"""Destinations that send the changes as messages (``kafka``, ``webhook``): one JSON
object per change, canonical bytes, and an idempotency key per message.

Idempotency keys survive a crash. A key is the SHA-256 of what the message carries —
destination, segment, as-of and the changes — never of a batch number or count, so
the same changes always get the same key. The changes go out in customer-id order
and batches are confirmed in that order, so after a crash (or a run that gave up)
the changes left unconfirmed are a suffix of the same list: the re-run cuts them into
the same batches, and a batch the receiver took but whose answer never arrived comes
again under its key.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from cdp.processing.activation.destinations.base import Confirm, Delivery


def changes(delivery: Delivery) -> list[dict[str, Any]]:
    """Entries, then exits, each in customer-id order: the order batches are cut and
    confirmed in, the same in every run (see the module's docstring)."""
    common = {"segment": delivery.segment, "as_of": delivery.as_of.isoformat()}
    found = []
    for row in delivery.entered.sort_by("customer_id").to_pylist():
        found.append(
            {
                **common,
                "change": "entered",
                "customer_id": row["customer_id"],
                "user_id": row["user_id"],
                "email": row["email"],
                "phone": row["phone"],
                "traits": json.loads(row["traits"]) if row["traits"] else {},
            }
        )
    for row in delivery.exited.sort_by("customer_id").to_pylist():
        found.append(
            {
                **common,
                "change": "exited",
                "customer_id": row["customer_id"],
                "email_sha256": row["email_sha256"],
                "phone_sha256": row["phone_sha256"],
            }
        )
    return found


def encode(content: dict[str, Any]) -> bytes:
    """Canonical JSON: the same content is always the same bytes."""
    return json.dumps(content, separators=(",", ":"), sort_keys=True).encode()


def idempotency_key(delivery: Delivery, body: bytes) -> str:
    """The SHA-256 of the destination, segment and as-of, and the message's body."""
    return hashlib.sha256(delivery.idempotency_prefix.encode() + b"\0" + body).hexdigest()


def confirm_changes(confirm: Confirm, sent: list[dict[str, Any]]) -> None:
    """Confirm the entries and exits among ``sent``."""
    confirm(
        [c["customer_id"] for c in sent if c["change"] == "entered"],
        [c["customer_id"] for c in sent if c["change"] == "exited"],
    )
