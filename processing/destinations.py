"""Destinations: how one segment's export reaches files, a Kafka topic, a webhook, or
ad-platform audience files.

Each deliverer gets a ``Delivery`` — the segment's consented members (the full
snapshot), who entered and who exited since the destination's last confirmed state —
and calls ``confirm`` for what the destination has acknowledged; the export module
advances the destination's state only from those confirmations. Anything not
confirmed is in the next diff, so a destination that was down loses nothing.

- **files**: ``members``, ``entered`` and ``exited`` as CSV, Parquet and JSON lines
  in ``<root>/<segment>/<as-of>/`` with ``manifest.json`` (counts, SHA-256 of every
  file), written in a temporary folder that is then renamed into place;
- **ad_audience**: ``audience_full.csv``, ``audience_add.csv``, ``audience_remove.csv``
  with the columns ``email`` and ``phone`` holding SHA-256 hex digests of the trimmed,
  lower-case email and of the phone in E.164 — what Meta and Google customer-list
  uploads accept for pre-hashed data — written the same way;
- **kafka**: one message per change, keyed by customer id, acknowledged by all
  in-sync replicas, with an ``idempotency-key`` header;
- **webhook**: batched JSON POSTs with an ``Idempotency-Key`` header (the same batch
  content always gets the same key), retried with exponential backoff on timeouts,
  connection errors, 408, 429 and 5xx; each acknowledged batch is confirmed at once.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from cdp.errors import DeliveryError
from cdp.processing.segment_config import (
    AudienceDestination,
    FilesDestination,
    KafkaDestination,
    WebhookDestination,
)
from cdp.processing.segment_rules import quote_identifier
from cdp.settings import Settings

# Called with the customer ids whose entry and exit the destination confirmed.
Confirm = Callable[[list[str], list[str]], None]


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


def deliver(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    destination: FilesDestination | AudienceDestination | KafkaDestination | WebhookDestination,
    delivery: Delivery,
    confirm: Confirm,
    out_dir: Path,
) -> str:
    """Send ``delivery``; return where it went (folder, topic or URL)."""
    if isinstance(destination, FilesDestination):
        return _write_files(con, destination, delivery, confirm, out_dir)
    if isinstance(destination, AudienceDestination):
        return _write_audience(con, destination, delivery, confirm, out_dir)
    if isinstance(destination, KafkaDestination):
        return _send_kafka(settings, destination, delivery, confirm)
    return _post_webhook(destination, delivery, confirm)


# -- files --------------------------------------------------------------------------


def _write_files(
    con: duckdb.DuckDBPyConnection,
    destination: FilesDestination,
    delivery: Delivery,
    confirm: Confirm,
    out_dir: Path,
) -> str:
    members = _with_trait_columns(con, delivery.members, delivery.traits)
    entered = _with_trait_columns(con, delivery.entered, delivery.traits)
    tables = {"members": members, "entered": entered, "exited": delivery.exited}
    # JSON lines keep the traits nested and typed; CSV and Parquet get flat columns.
    originals = {
        "members": delivery.members,
        "entered": delivery.entered,
        "exited": delivery.exited,
    }
    jsonl = {name: _json_lines(con, table) for name, table in originals.items()}

    def write(folder: Path) -> None:
        for name, table in tables.items():
            if "csv" in destination.formats:
                pa_csv.write_csv(table, folder / f"{name}.csv")
            if "parquet" in destination.formats:
                pq.write_table(table, folder / f"{name}.parquet")
            if "jsonl" in destination.formats:
                (folder / f"{name}.jsonl").write_text(jsonl[name], encoding="utf-8")

    target = _root(out_dir, destination.path) / delivery.segment / delivery.as_of.isoformat()
    _publish_folder(target, delivery, write)
    confirm(_ids(delivery.entered), _ids(delivery.exited))
    return str(target)


def _write_audience(
    con: duckdb.DuckDBPyConnection,
    destination: AudienceDestination,
    delivery: Delivery,
    confirm: Confirm,
    out_dir: Path,
) -> str:
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

    target = _root(out_dir, destination.path) / delivery.segment / delivery.as_of.isoformat()
    _publish_folder(target, delivery, write)
    confirm(_ids(delivery.entered), _ids(delivery.exited))
    return str(target)


def _root(out_dir: Path, path: Path) -> Path:
    return path if path.is_absolute() else out_dir / path


def _with_trait_columns(
    con: duckdb.DuckDBPyConnection, table: pa.Table, traits: list[str]
) -> pa.Table:
    """Flat columns for tabular files: each trait as text (lists as JSON arrays)."""
    columns = ", ".join(
        f"json_extract_string(traits, $t{i}) AS {quote_identifier(trait)}"
        for i, trait in enumerate(traits)
    )
    params = {f"t{i}": f'$."{trait}"' for i, trait in enumerate(traits)}
    con.register("export_rows", table)
    try:
        return con.sql(
            "SELECT customer_id, user_id, email, phone" + (f", {columns}" if columns else "")
            + " FROM export_rows ORDER BY customer_id",
            params=params or None,
        ).to_arrow_table()  # fmt: skip
    finally:
        con.unregister("export_rows")


def _json_lines(con: duckdb.DuckDBPyConnection, table: pa.Table) -> str:
    """One JSON object per row, traits nested as they are."""
    con.register("export_rows", table)
    try:
        rows = con.sql(
            "SELECT to_json(r) FROM export_rows r ORDER BY customer_id"
            if "traits" not in table.column_names
            else "SELECT to_json({'customer_id': customer_id, 'user_id': user_id, 'email': email,"
            " 'phone': phone, 'traits': json(traits)}) FROM export_rows ORDER BY customer_id"
        ).fetchall()
    finally:
        con.unregister("export_rows")
    return "".join(f"{row[0]}\n" for row in rows)


def _publish_folder(target: Path, delivery: Delivery, write: Callable[[Path], None]) -> None:
    """Write into a temporary sibling folder, add the manifest, then rename into place:
    a reader sees the previous folder or the complete new one, never a partial one."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        write(staging)
        files = {}
        for path in sorted(staging.iterdir()):
            files[path.name] = {
                "bytes": path.stat().st_size,
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            }
        manifest = {
            "export_run_id": delivery.export_run_id,
            "destination": delivery.destination,
            "segment": delivery.segment,
            "as_of": delivery.as_of.isoformat(),
            "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "counts": {
                "members": delivery.members.num_rows,
                "entered": delivery.entered.num_rows,
                "exited": delivery.exited.num_rows,
            },
            "files": files,
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if target.exists():
            retired = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
            target.rename(retired)
            staging.rename(target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


# -- Kafka and webhooks: the changes as messages -------------------------------------


def _changes(delivery: Delivery) -> list[dict[str, Any]]:
    common = {"segment": delivery.segment, "as_of": delivery.as_of.isoformat()}
    changes = []
    for row in delivery.entered.to_pylist():
        changes.append({
            **common, "change": "entered", "customer_id": row["customer_id"],
            "user_id": row["user_id"], "email": row["email"], "phone": row["phone"],
            "traits": json.loads(row["traits"]) if row["traits"] else {},
        })  # fmt: skip
    for row in delivery.exited.to_pylist():
        changes.append({
            **common, "change": "exited", "customer_id": row["customer_id"],
            "email_sha256": row["email_sha256"], "phone_sha256": row["phone_sha256"],
        })  # fmt: skip
    return changes


def _confirm_changes(confirm: Confirm, changes: list[dict[str, Any]]) -> None:
    confirm(
        [c["customer_id"] for c in changes if c["change"] == "entered"],
        [c["customer_id"] for c in changes if c["change"] == "exited"],
    )


def _send_kafka(
    settings: Settings, destination: KafkaDestination, delivery: Delivery, confirm: Confirm
) -> str:
    from kafka import KafkaProducer
    from kafka.errors import KafkaError

    from cdp.ingest.broker import bootstrap_list
    from cdp.ingest.topics import ensure_topics

    location = f"kafka topic {destination.topic}"
    if not settings.kafka.bootstrap_servers:
        raise DeliveryError(f"{location}: kafka.bootstrap_servers is not configured")
    changes = _changes(delivery)
    if not changes:
        return location
    try:
        ensure_topics(settings, [destination.topic])
        producer = KafkaProducer(
            bootstrap_servers=bootstrap_list(settings.kafka.bootstrap_servers),
            client_id=f"{settings.kafka.client_id}-export",
            acks="all",
            linger_ms=20,
        )
    except KafkaError as exc:
        raise DeliveryError(f"{location}: cannot connect: {exc}") from None
    try:
        futures = [
            producer.send(
                destination.topic,
                key=change["customer_id"].encode(),
                value=json.dumps(change, separators=(",", ":")).encode(),
                headers=[
                    (
                        "idempotency-key",
                        f"{delivery.idempotency_prefix}/{change['customer_id']}/{change['change']}".encode(),
                    )
                ],
            )
            for change in changes
        ]
        producer.flush(timeout=60)
        for future in futures:
            future.get(timeout=0)
    except KafkaError as exc:
        raise DeliveryError(f"{location}: not acknowledged: {exc}") from None
    finally:
        producer.close(timeout=5)
    _confirm_changes(confirm, changes)
    return location


def _post_webhook(destination: WebhookDestination, delivery: Delivery, confirm: Confirm) -> str:
    changes = _changes(delivery)
    size = destination.batch_size
    batches = [changes[start : start + size] for start in range(0, len(changes), size)]
    for number, batch in enumerate(batches, start=1):
        body = json.dumps({
            "destination": delivery.destination, "segment": delivery.segment,
            "as_of": delivery.as_of.isoformat(), "batch": number, "batches": len(batches),
            "changes": batch,
        }, separators=(",", ":"), sort_keys=True).encode()  # fmt: skip
        # The key depends only on the batch's content, so a batch re-sent after a lost
        # acknowledgement is recognisable by the receiver as the same batch.
        key = hashlib.sha256(delivery.idempotency_prefix.encode() + b"\0" + body).hexdigest()
        _post_with_retries(destination, body, key)
        _confirm_changes(confirm, batch)
    return destination.url


def _post_with_retries(destination: WebhookDestination, body: bytes, key: str) -> None:
    headers = {
        **destination.headers,
        "Content-Type": "application/json",
        "Idempotency-Key": key,
        "User-Agent": "cdp-export",
    }
    last_error = ""
    for attempt in range(1, destination.max_attempts + 1):
        request = urllib.request.Request(destination.url, data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=destination.timeout_s) as response:
                response.read()
            return
        except urllib.error.HTTPError as exc:
            if exc.code not in (408, 429) and exc.code < 500:
                raise DeliveryError(
                    f"webhook {destination.url} refused the batch: HTTP {exc.code} {exc.reason} "
                    "(a client error; not retried)"
                ) from None
            last_error = f"HTTP {exc.code} {exc.reason}"
        except (
            urllib.error.URLError,
            TimeoutError,
            ConnectionError,
            http.client.HTTPException,
        ) as exc:
            last_error = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
        if attempt < destination.max_attempts:
            time.sleep(destination.backoff_s * 2 ** (attempt - 1))
    raise DeliveryError(
        f"webhook {destination.url} did not accept the batch after "
        f"{destination.max_attempts} attempts (last: {last_error})"
    )


def _ids(table: pa.Table) -> list[str]:
    return table.column("customer_id").to_pylist()
