"""The ``webhook`` destination: the changes (see :mod:`.messages`) in batched JSON
POSTs with an ``Idempotency-Key`` header, retried on timeouts, connection errors,
408, 429 and 5xx after the receiver's ``Retry-After`` (429, 503; capped at
``RETRY_AFTER_MAX_S``) or else an exponential backoff with jitter; each acknowledged
batch is confirmed at once."""

from __future__ import annotations

import email.utils
import http.client
import random
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime

from cdp.errors import DeliveryError
from cdp.processing.activation.destinations.base import Confirm, Context, Deliverer, Delivery
from cdp.processing.activation.destinations.messages import (
    changes,
    confirm_changes,
    encode,
    idempotency_key,
)
from cdp.processing.segmentation.config import WebhookDestination

# The longest a receiver's Retry-After makes a delivery wait before an attempt: an
# export holds the build lock, and a receiver asking for more is better retried at
# the next run (its changes stay in the diff).
RETRY_AFTER_MAX_S = 60.0


class WebhookDeliverer(Deliverer[WebhookDestination]):
    def deliver(self, delivery: Delivery, confirm: Confirm, context: Context) -> str:
        destination = self.config
        pending = changes(delivery)
        size = destination.batch_size
        for start in range(0, len(pending), size):
            batch = pending[start : start + size]
            # No batch number or count in the body: after a crash the changes left are
            # batched from 1 again, and the same changes must be the same body and key.
            body = encode(
                {
                    "destination": delivery.destination,
                    "segment": delivery.segment,
                    "as_of": delivery.as_of.isoformat(),
                    "changes": batch,
                }
            )
            _post_with_retries(destination, body, idempotency_key(delivery, body))
            confirm_changes(confirm, batch)
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
        asked: float | None = None  # the receiver's Retry-After, in seconds
        try:
            request = urllib.request.Request(destination.url, data=body, headers=headers)
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
        except (OSError, ValueError) as exc:
            # Neither an answer nor a failure worth retrying: a URL or a header the
            # HTTP client refuses (ValueError), an SSL error reading the answer, ...
            raise DeliveryError(
                f"webhook {destination.url}: the batch cannot be sent "
                f"({type(exc).__name__}: {exc}; not retried)"
            ) from exc
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
