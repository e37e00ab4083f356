"""The explorer's routes: server-rendered pages over the analyst snapshot.

Stable URLs, shareable as they are: ``/customers?q=…`` (a single exact match
redirects to the customer), ``/customers/<id>`` (``?family=&page=`` for the
timeline), ``/segments``, ``/segments/<name>`` (``?rfm=&tier=&sort=&dir=&page=``)
and ``/segments/<name>/members.csv`` (the same filter, every matching row),
``/report``, ``/operations``.

Read-only by construction: the database is opened read-only, and
:class:`ReadOnlyMethods` answers 405 to any method but GET and HEAD — the one
exception being ``POST /login``, which writes nothing but a cookie (a token in a GET
URL would land in browser history and proxy logs). Bad input gets a 400 page naming
the parameter; nothing a visitor sends can produce a traceback.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cdp.errors import CdpError
from cdp.settings import Settings
from cdp.ui import queries
from cdp.ui.auth import TokenGate, login_routes
from cdp.ui.explain import clv_variants, models_behind_prediction
from cdp.ui.format import FILTERS, spreadsheet_cell
from cdp.ui.segment_file import SegmentFile
from cdp.ui.snapshot import AnalystSnapshot, NotPublished

log = logging.getLogger(__name__)

MAX_PAGE = 1_000_000
_PAGE = re.compile(r"[0-9]{1,7}")


class BadRequest(Exception):
    """A query parameter the page cannot use; the message names it."""


class NotFound(Exception):
    pass


@dataclass(frozen=True)
class UiContext:
    settings: Settings
    segments: SegmentFile
    snapshot: AnalystSnapshot
    report: Path
    templates: Environment

    def page(self, name: str, status: int = 200, **values: Any) -> HTMLResponse:
        body = self.templates.get_template(name).render(
            token_required=bool(self.settings.ui.access_token), **values
        )
        return HTMLResponse(body, status_code=status)


def _param(request: Request, name: str, allowed: tuple[str, ...] | None = None) -> str | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return None
    if len(value) > queries.MAX_QUERY_CHARS:
        raise BadRequest(f"{name}: longer than {queries.MAX_QUERY_CHARS} characters")
    if allowed is not None and value not in allowed:
        raise BadRequest(f"{name}: {value[:40]!r} is not one of {', '.join(allowed)}")
    return value


def _page_number(request: Request) -> int:
    text = _param(request, "page") or "1"
    # ASCII digits only: str.isdigit() takes '²' and '①', which int() then refuses.
    if not _PAGE.fullmatch(text) or not 1 <= int(text) <= MAX_PAGE:
        raise BadRequest(f"page: {text[:40]!r} is not a page number (1 to {MAX_PAGE:,})")
    return int(text)


def create_app(ui: UiContext) -> ASGIApp:
    size = ui.settings.ui.page_size

    def home(request: Request) -> Response:
        return RedirectResponse("/customers", status_code=303)

    def customers(request: Request) -> Response:
        text = request.query_params.get("q", "")
        if len(text) > queries.MAX_QUERY_CHARS:
            raise BadRequest(f"q: longer than {queries.MAX_QUERY_CHARS} characters")
        result = None
        if text.strip():
            with ui.snapshot.cursor() as cursor:
                result = queries.search(cursor, text, size)
            found = {row["customer_id"] for row in result.exact}
            if len(found) == 1:
                return RedirectResponse(f"/customers/{found.pop()}", status_code=303)
        return ui.page("search.html", q=text, result=result, nav="customers")

    def customer(request: Request) -> Response:
        customer_id = request.path_params["customer_id"]
        if len(customer_id) > queries.MAX_QUERY_CHARS:
            raise NotFound()
        family = _param(request, "family", queries.FAMILIES)
        page = _page_number(request)
        with ui.snapshot.cursor() as cursor:
            found = queries.customer(cursor, customer_id)
            if found is None:
                survivor = queries.surviving_id(cursor, customer_id)
                if survivor is not None:
                    return RedirectResponse(f"/customers/{survivor}", status_code=303)
                raise NotFound()
            events, total = queries.timeline(cursor, customer_id, family, page, size)
        membership = {s.name: s.definition for s in ui.segments.current().segments}
        models = models_behind_prediction(found.models)
        purchase_model = next((m["label"] for m in models if m["counts_purchases"]), "BG/NBD")
        return ui.page(
            "customer.html",
            c=found,
            p=found.profile,
            clv=clv_variants(found.profile, ui.settings, purchase_model),
            models=models,
            events=events,
            total=total,
            page=page,
            pages=max(1, math.ceil(total / size)),
            family=family,
            families=queries.FAMILIES,
            definitions=membership,
            nav="customers",
        )

    def segments(request: Request) -> Response:
        with ui.snapshot.cursor() as cursor:
            sizes = queries.segment_overview(cursor)
        configured = ui.segments.current().segments
        return ui.page("segments.html", segments=configured, sizes=sizes, nav="segments")

    def _segment_filter(request: Request) -> dict[str, Any]:
        name = request.path_params["name"]
        configured = ui.segments.current().segments
        definition = next((s.definition for s in configured if s.name == name), None)
        if definition is None:
            raise NotFound()
        sort = _param(request, "sort", tuple(queries.MEMBER_SORTS)) or "historic_clv"
        direction = _param(request, "dir", ("asc", "desc")) or "desc"
        return {
            "definition": definition,
            "rfm": _param(request, "rfm"),
            "tier": _param(request, "tier"),
            "sort": sort,
            "dir": direction,
        }

    def segment(request: Request) -> Response:
        f = _segment_filter(request)
        page = _page_number(request)
        name = f["definition"].name
        with ui.snapshot.cursor() as cursor:
            rows, total = _members(cursor, f, limit=size, offset=(page - 1) * size)
            sizes = queries.segment_overview(cursor).get(name)
            changes = queries.segment_changes(cursor, name)
            traits = queries.segment_traits(cursor, name)
            choices = queries.member_filters(cursor, name)
        return ui.page(
            "segment.html",
            f=f,
            s=f["definition"],
            members=rows,
            total=total,
            page=page,
            pages=max(1, math.ceil(total / size)),
            sizes=sizes,
            changes=changes,
            limit=queries.CHANGES_LISTED,
            traits=traits,
            choices=choices,
            query=_query_string(f),
            sorts=queries.MEMBER_SORTS,
            nav="segments",
        )

    def members_csv(request: Request) -> Response:
        f = _segment_filter(request)
        name = f["definition"].name
        with ui.snapshot.cursor() as cursor:
            rows, _ = _members(cursor, f, limit=None)
        out = io.StringIO()
        columns = list(rows[0]) if rows else list(queries.MEMBER_COLUMNS)
        writer = csv.writer(out)
        writer.writerow(columns)
        writer.writerows([spreadsheet_cell(row[c]) for c in columns] for row in rows)
        return Response(
            out.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}-members.csv"'},
        )

    def report(request: Request) -> Response:
        if not ui.report.is_file():
            return ui.page(
                "message.html",
                404,
                title="No report yet",
                message=f"The report {ui.report} is written by every build and publish.",
            )
        return FileResponse(ui.report, media_type="text/html; charset=utf-8")

    def operations(request: Request) -> Response:
        with ui.snapshot.cursor() as cursor:
            ops = queries.operations(cursor)
        return ui.page("operations.html", ops=ops, nav="operations")

    login_form, login_submit = login_routes(ui.settings.ui.access_token, ui.page)
    routes = [
        Route("/", home),
        Route("/customers", customers),
        Route("/customers/{customer_id:str}", customer),
        Route("/segments", segments),
        Route("/segments/{name:str}", segment),
        Route("/segments/{name:str}/members.csv", members_csv),
        Route("/report", report),
        Route("/operations", operations),
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login_submit, methods=["POST"]),
        Mount("/static", StaticFiles(packages=[("cdp.ui", "static")]), name="static"),
    ]

    async def bad_request(request: Request, exc: Exception) -> Response:
        return ui.page("message.html", 400, title="Bad request", message=str(exc))

    async def not_found(request: Request, exc: Exception) -> Response:
        return ui.page(
            "message.html", 404, title="Not found", message="No such page or customer here."
        )

    async def unavailable(request: Request, exc: Exception) -> Response:
        return ui.page("message.html", 503, title="Analyst database unavailable", message=str(exc))

    async def failed(request: Request, exc: Exception) -> Response:
        log.exception("cdp ui: %s %s failed", request.method, request.url.path)
        return ui.page(
            "message.html",
            500,
            title="Something went wrong",
            message="The page could not be built; the server log says why. Try again: "
            "a publish may have replaced the database just now.",
        )

    app = Starlette(
        routes=routes,
        exception_handlers={
            BadRequest: bad_request,
            NotFound: not_found,
            404: not_found,
            NotPublished: unavailable,
            CdpError: unavailable,
            Exception: failed,
        },
    )
    gated = TokenGate(app, ui.settings.ui.access_token, ui.page)
    return ServerTiming(ReadOnlyMethods(gated))  # outermost: its headers go on every answer


def _members(
    cursor: duckdb.DuckDBPyConnection, f: dict[str, Any], *, limit: int | None, offset: int = 0
) -> tuple[list[queries.Row], int]:
    """The members of the segment that ``f`` (a page's filter) names, filtered and sorted."""
    return queries.members(
        cursor,
        f["definition"].name,
        rfm=f["rfm"],
        tier=f["tier"],
        sort=f["sort"],
        descending=f["dir"] == "desc",
        limit=limit,
        offset=offset,
    )


def _query_string(f: dict[str, Any]) -> dict[str, str]:
    return {k: f[k] for k in ("rfm", "tier", "sort", "dir") if f[k]}


# Pages hold personal data: not cached, not framed, no referrer leaving with their
# URL (which may hold an email), and nothing loaded or run but the app's own files
# (the report's inline style and its one layout-measuring script aside).
_PAGE_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
_CSP = b"default-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'"
_REPORT_CSP = b"default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


class ServerTiming:
    """``Server-Timing: app;dur=<ms>`` on every answer: the time from the request's
    arrival to its answer's start, which benchmarks/ui_latency.py reads (and a
    browser's developer tools show); and the headers every page gets."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                ms = (time.perf_counter() - started) * 1000
                csp = _REPORT_CSP if scope["path"] == "/report" else _CSP
                headers = [
                    *message.get("headers", []),
                    *_PAGE_HEADERS,
                    (b"content-security-policy", csp),
                    (b"server-timing", f"app;dur={ms:.2f}".encode()),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, timed)


class ReadOnlyMethods:
    """405 for every method but GET and HEAD (and POST to /login), before routing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method, path = scope["method"], scope["path"]
            if method not in ("GET", "HEAD") and not (method == "POST" and path == "/login"):
                response = Response(
                    "read-only: only GET and HEAD are served\n",
                    status_code=405,
                    headers={"Allow": "GET, HEAD"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def templates() -> Environment:
    env = Environment(
        loader=PackageLoader("cdp.ui", "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(FILTERS)
    return env
