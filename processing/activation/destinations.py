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
- **webhook**: batched JSON POSTs with an ``Idempotency-Key`` header, retried on
  timeouts, connection errors, 408, 429 and 5xx after the receiver's ``Retry-After``
  (429, 503; capped at ``RETRY_AFTER_MAX_S``) or else an exponential backoff with
  jitter; each acknowledged batch is confirmed at once.

Idempotency keys survive a crash. A key is the SHA-256 of what the message carries —
destination, segment, as-of and the changes — never of a batch number or count, so
the same changes always get the same key. The changes go out in customer-id order
and batches are confirmed in that order, so after a crash (or a run that gave up)
the changes left unconfirmed are a suffix of the same list: the re-run cuts them into
the same batches, and a batch the receiver took but whose answer never arrived comes
again under its key.

A process killed while writing a folder leaves hidden ``.<as-of>.tmp-*`` (and, during
the swap, ``.<as-of>.old-*``) folders of member files beside it;
:func:`remove_staging_leftovers` deletes them when the next export starts.
"""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import json
import random
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from cdp.errors import DeliveryError
from cdp.processing.segmentation.config import (
    AudienceDestination,
    FilesDestination,
    KafkaDestination,
    WebhookDestination,
)
from cdp.settings import Settings
from cdp.storage.disk import storage_errors
from cdp.storage.sql import quote_identifier

# Called with the customer ids whose entry and exit the destination confirmed.
Confirm = Callable[[list[str], list[str]], None]

# The longest a receiver's Retry-After makes a delivery wait before an attempt: an
# export holds the build lock, and a receiver asking for more is better retried at
# the next run (its changes stay in the diff).
RETRY_AFTER_MAX_S = 60.0

# Hidden folders a file destination's delivery writes beside ``<segment>/<as-of>``:
# the next folder while it is written, and the previous one while it is swapped out.
_STAGING_PREFIX = ".{name}.tmp-"
_RETIRED_PREFIX = ".{name}.old-"
_LEFTOVER = re.compile(r"^\.\d{4}-\d{2}-\d{2}\.(tmp|old)-[A-Za-z0-9_]+$")


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


def remove_staging_leftovers(
    destinations: Iterable[
        FilesDestination | AudienceDestination | KafkaDestination | WebhookDestination
    ],
    out_dir: Path,
) -> list[Path]:
    """Delete the hidden folders a killed delivery left under each file destination
    (``files``, ``ad_audience``) of ``destinations``; return them.

    They hold member files — personal data — that nothing else would ever remove. Any
    segment's folder is searched, including those of segments no longer configured.
    Only the process that holds the database for writing exports, so when it starts
    an export no other delivery is writing them."""
    removed = []
    roots = {
        _root(out_dir, d.path)
        for d in destinations
        if isinstance(d, FilesDestination | AudienceDestination)
    }
    for root in sorted(roots):
        if not root.is_dir():
            continue
        for segment in sorted(p for p in root.iterdir() if p.is_dir()):
            for leftover in sorted(segment.iterdir()):
                if _LEFTOVER.match(leftover.name) and leftover.is_dir():
                    shutil.rmtree(leftover)
                    removed.append(leftover)
    return removed


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
    a reader sees the previous folder or the complete new one, never a partial one.

    A full disk (or an I/O error) is a :class:`~cdp.errors.DiskError` naming
    ``target``; the temporary folder is deleted and the previous folder stays."""
    with storage_errors(target):
        _write_folder(target, delivery, write)


def _write_folder(target: Path, delivery: Delivery, write: Callable[[Path], None]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=_STAGING_PREFIX.format(name=target.name), dir=target.parent)
    )
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
            retired = target.with_name(
                _RETIRED_PREFIX.format(name=target.name) + uuid.uuid4().hex[:8]
            )
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
    """Entries, then exits, each in customer-id order: the order batches are cut and
    confirmed in, the same in every run (see the module's docstring)."""
    common = {"segment": delivery.segment, "as_of": delivery.as_of.isoformat()}
    changes = []
    for row in delivery.entered.sort_by("customer_id").to_pylist():
        changes.append({
            **common, "change": "entered", "customer_id": row["customer_id"],
            "user_id": row["user_id"], "email": row["email"], "phone": row["phone"],
            "traits": json.loads(row["traits"]) if row["traits"] else {},
        })  # fmt: skip
    for row in delivery.exited.sort_by("customer_id").to_pylist():
        changes.append({
            **common, "change": "exited", "customer_id": row["customer_id"],
            "email_sha256": row["email_sha256"], "phone_sha256": row["phone_sha256"],
        })  # fmt: skip
    return changes


def _encode(content: dict[str, Any]) -> bytes:
    """Canonical JSON: the same content is always the same bytes."""
    return json.dumps(content, separators=(",", ":"), sort_keys=True).encode()


def _idempotency_key(delivery: Delivery, body: bytes) -> str:
    """The SHA-256 of the destination, segment and as-of, and the message's body."""
    return hashlib.sha256(delivery.idempotency_prefix.encode() + b"\0" + body).hexdigest()


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
        futures = []
        for change in changes:
            value = _encode(change)
            futures.append(
                producer.send(
                    destination.topic,
                    key=change["customer_id"].encode(),
                    value=value,
                    headers=[("idempotency-key", _idempotency_key(delivery, value).encode())],
                )
            )
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
    for start in range(0, len(changes), size):
        batch = changes[start : start + size]
        # No batch number or count in the body: after a crash the changes left are
        # batched from 1 again, and the same changes must be the same body and key.
        body = _encode({
            "destination": delivery.destination, "segment": delivery.segment,
            "as_of": delivery.as_of.isoformat(), "changes": batch,
        })  # fmt: skip
        _post_with_retries(destination, body, _idempotency_key(delivery, body))
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
        asked: float | None = None  # the receiver's Retry-After, in seconds
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
            if exc.code in (429, 503):
                asked = retry_after_s(exc.headers.get("Retry-After"), datetime.now(UTC))
        except (
            urllib.error.URLError,
            TimeoutError,
            ConnectionError,
            http.client.HTTPException,
        ) as exc:
            last_error = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
        if attempt < destination.max_attempts:
            time.sleep(asked if asked is not None else backoff_s(destination.backoff_s, attempt))
    raise DeliveryError(
        f"webhook {destination.url} did not accept the batch after "
        f"{destination.max_attempts} attempts (last: {last_error})"
    )


def retry_after_s(value: str | None, now: datetime) -> float | None:
    """A ``Retry-After`` header in seconds from ``now`` — it is either a number of
    seconds or an HTTP date — capped at ``RETRY_AFTER_MAX_S``; None when absent or
    unreadable (the backoff applies then)."""
    if not value or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        seconds = float(text)
    else:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # HTTP dates are GMT
            when = when.replace(tzinfo=UTC)
        seconds = max(0.0, (when - now).total_seconds())
    return min(seconds, RETRY_AFTER_MAX_S)


def backoff_s(base_s: float, attempt: int, rng: random.Random | None = None) -> float:
    """The wait after failed attempt ``attempt`` (1, 2, ...): ``base_s`` doubled per
    attempt, of which a random half (jitter), so that senders that failed together
    do not all retry at the same moment."""
    ceiling = base_s * 2 ** (attempt - 1)
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


def _ids(table: pa.Table) -> list[str]:
    return table.column("customer_id").to_pylist()
