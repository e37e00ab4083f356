"""The collector's HTTP surface (Starlette): routes, authentication, CORS, answers.

What a client is answered decides whether its SDK retries, drops or duplicates
(``shared/COLLECTOR.md``), so the answers are few and exact:

- ``200 {"success": true}`` once Kafka acknowledged every event of the request;
- ``400 {"code", "message"}`` for what will never be accepted (not JSON, over a
  limit): SDKs drop the batch;
- ``401`` for a missing or unknown write key, ``403`` for a browser origin the source
  does not allow;
- ``503`` with ``Retry-After`` when Kafka cannot take the events in time: SDKs retry.

CORS: a preflight is answered for any origin some source allows (a preflight carries
no write key); other responses name the origin only if the request's source allows
it. The origin is reflected, never with ``Access-Control-Allow-Credentials`` (SDKs
send no cookies, and credentials with a reflected origin let any site read answers
meant for another).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from cdp.ingest.collector.delivery import KafkaDelivery, NotDelivered, Undeliverable
from cdp.ingest.collector.metrics import CollectorMetrics
from cdp.ingest.collector.segment import (
    CALL_OF_PATH,
    Limits,
    RequestRejected,
    parse_request,
    read_body,
    to_messages,
    write_key_of,
)
from cdp.settings import CollectorSource, Settings

log = logging.getLogger(__name__)

_SUCCESS = b'{"success":true}'
_ALLOWED_HEADERS = "Content-Type, Content-Encoding, Authorization, X-Retry-Count"
_PREFLIGHT_MAX_AGE = "86400"


PROBLEM_LOG_EVERY_S = 60.0


class ThrottledLog:
    """Warnings, at most one per kind of problem per interval: a misconfigured SDK or
    a broker outage repeats the same problem thousands of times a minute, and the
    log must stay readable. The next line of a kind says how many were left out."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._last: dict[str, float] = {}
        self._left_out: dict[str, int] = {}

    def warn(self, kind: str, message: str, *args: object) -> None:
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self.every_s:
            self._left_out[kind] = self._left_out.get(kind, 0) + 1
            return
        left_out = self._left_out.pop(kind, 0)
        if left_out and last is not None:
            message += f" (and {left_out} more like it in the last {now - last:.0f} s)"
        self._last[kind] = now
        log.warning(message, *args)


def masked(write_key: str) -> str:
    """A write key as logs show it: enough to tell keys apart, not to use one."""
    return write_key[:4] + "…" if len(write_key) > 8 else "…"


@dataclass
class _Sources:
    by_key: dict[str, CollectorSource]
    any_origin: bool
    origins: frozenset[str]

    @classmethod
    def of(cls, sources: list[CollectorSource]) -> _Sources:
        origins = {origin for source in sources for origin in source.allowed_origins}
        return cls({s.write_key: s for s in sources}, "*" in origins, frozenset(origins))


def create_app(
    settings: Settings,
    delivery: KafkaDelivery,
    metrics: CollectorMetrics,
    registry: CollectorRegistry,
) -> Starlette:
    """The ASGI app; ``registry`` is what ``/metrics`` shows (all workers' metrics)."""
    collector = settings.collector
    limits = Limits(
        collector.max_event_bytes, collector.max_request_bytes, collector.max_batch_events
    )
    sources = _Sources.of(collector.sources)
    topic_by_family = settings.topics.by_family()
    fallback_topic = settings.topics.browse
    retry_after = str(collector.retry_after_s)
    problems = ThrottledLog(PROBLEM_LOG_EVERY_S)

    def cors(origin: str | None, allowed: list[str] | frozenset[str]) -> dict[str, str]:
        if origin is None:
            return {}
        if "*" in allowed or origin.lower() in allowed:
            return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        return {"Vary": "Origin"}

    def answer(
        call: str,
        status: int,
        body: bytes,
        headers: dict[str, str] | None = None,
    ) -> Response:
        metrics.count(call, status)
        return Response(body, status, headers, media_type="application/json")

    def problem(
        call: str, status: int, code: str, message: str, headers: dict, kind: str = ""
    ) -> Response:
        kind = f"{status} {code} {kind}"
        problems.warn(kind, "answered %d %s to /v1/%s: %s", status, code, call, message)
        return answer(call, status, orjson.dumps({"code": code, "message": message}), headers)

    async def collect(request: Request) -> Response:
        received_at = datetime.now(UTC)
        call_path = request.path_params["call"]
        call = CALL_OF_PATH.get(call_path)
        origin = request.headers.get("origin")
        if call is None:  # labelled "unknown": paths must not mint metric series
            return problem(
                "unknown",
                404,
                "not_found",
                f"no such call /v1/{call_path}; use one of /v1/"
                + ", /v1/".join(sorted(CALL_OF_PATH)),
                cors(origin, sources.origins),
            )
        headers = cors(origin, sources.origins)
        try:
            async with asyncio.timeout(collector.delivery_timeout_s):
                raw = await _read_capped(request, limits.max_request_bytes)
            body = read_body(raw, request.headers.get("content-encoding", ""), limits)
            parsed = parse_request(call, body, limits)
        except RequestRejected as rejected:
            return problem(call, 400, rejected.code, rejected.message, headers)
        except ClientDisconnect:
            return answer(call, 400, b"")  # nobody is there to read it
        except TimeoutError:  # a client trickling its body must not hold a connection
            return problem(
                call,
                408,
                "request_timeout",
                f"the body did not arrive within {collector.delivery_timeout_s:g} s",
                headers,
            )
        write_key = write_key_of(
            parsed,
            _basic_user(request.headers.get("authorization")),
            request.query_params.get("writeKey"),
        )
        source = sources.by_key.get(write_key)
        if source is None:
            why = "no write key" if not write_key else f"unknown write key {masked(write_key)}"
            return problem(
                call,
                401,
                "unauthorized",
                f"{why}: send a source's write key as the HTTP Basic user, as 'writeKey' "
                "in the body, or as ?writeKey=",
                headers,
                kind="no key" if not write_key else "unknown key",
            )
        headers = cors(origin, source.allowed_origins)
        if origin is not None and "Access-Control-Allow-Origin" not in headers:
            return problem(
                call,
                403,
                "origin_not_allowed",
                f"origin {origin} may not send to source {source.name!r} "
                "(collector.sources.allowed_origins)",
                headers,
            )
        client_ip = request.client.host if source.capture_ip and request.client else None
        try:
            messages = to_messages(
                parsed,
                source=source.name,
                topic_by_family=topic_by_family,
                fallback_topic=fallback_topic,
                received_at=received_at,
                client_ip=client_ip,
                limits=limits,
                body=body,
            )
        except RequestRejected as rejected:
            return problem(call, 400, rejected.code, rejected.message, headers)
        # Kafka's deadline counts from here: a slow upload is not Kafka's delay.
        deadline = time.monotonic() + collector.delivery_timeout_s
        try:
            await delivery.deliver(messages, deadline)
        except Undeliverable as exc:
            return problem(call, 400, "rejected_by_kafka", str(exc), headers)
        except NotDelivered as exc:
            return problem(
                call,
                503,
                "unavailable",
                f"{exc} ({len(messages)} events from {source.name}); nothing is lost: retry "
                f"after {retry_after} s with the same messageIds",
                {**headers, "Retry-After": retry_after},
            )
        metrics.events.labels(source.name).inc(len(messages))
        return answer(call, 200, _SUCCESS, headers)

    async def preflight(request: Request) -> Response:
        origin = request.headers.get("origin")
        headers = cors(origin, sources.origins)
        call = CALL_OF_PATH.get(request.path_params["call"])
        if call is None:
            return problem("unknown", 404, "not_found", "no such call", headers)
        if "Access-Control-Allow-Origin" not in headers:
            return problem(
                call,
                403,
                "origin_not_allowed",
                f"origin {origin} may not send to this collector "
                "(collector.sources.allowed_origins)",
                headers,
            )
        headers |= {
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": _ALLOWED_HEADERS,
            "Access-Control-Max-Age": _PREFLIGHT_MAX_AGE,
        }
        metrics.count(call, 204)
        return Response(status_code=204, headers=headers)

    async def healthz(request: Request) -> Response:
        # 200 either way: restarting the collector would not bring Kafka back.
        status = "ok" if delivery.connected else "waiting for Kafka"
        return Response(
            orjson.dumps({"status": status, "in_flight_events": delivery.in_flight}),
            media_type="application/json",
        )

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/v1/{call}", collect, methods=["POST"]),
            Route("/v1/{call}", preflight, methods=["OPTIONS"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", prometheus, methods=["GET"]),
        ]
    )


async def _read_capped(request: Request, limit: int) -> bytes:
    """The raw body, refusing one over ``limit`` without reading it all: a compressed
    body is never larger than what it inflates to, so it is over the limit too."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestRejected(
            "request_too_large",
            f"the request is {int(declared):,} bytes, over the limit of {limit:,} "
            "(collector.max_request_bytes); send smaller batches",
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestRejected(
                "request_too_large",
                f"the request is over the limit of {limit:,} bytes "
                "(collector.max_request_bytes); send smaller batches",
            )
        chunks.append(chunk)
    return b"".join(chunks)


def _basic_user(authorization: str | None) -> str | None:
    """The user of HTTP Basic credentials: the write key (the colon is optional)."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[0] or None
