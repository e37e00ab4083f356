"""The access token: what stands between the explorer's personal data and a network.

On loopback with no token configured, nothing is asked. With ``ui.access_token`` set
(required to bind anything else: :mod:`cdp.ui.server`), every request but the login
page and the static assets must carry either the header ``Authorization: Bearer
<token>`` (scripts) or the session cookie a login sets (browsers). The cookie holds
an HMAC of the token, not the token, and is HttpOnly and SameSite=Strict. Every
comparison is constant-time (``hmac.compare_digest``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

SESSION_COOKIE = "cdp_ui_session"
_MAX_LOGIN_BODY = 4096
_OPEN_PATHS = ("/login", "/static/")


def session_value(token: str) -> str:
    return hmac.new(token.encode(), b"cdp ui session v1", hashlib.sha256).hexdigest()


def authorized(scope: Scope, token: str) -> bool:
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    bearer = headers.get("authorization", "")
    if bearer[:7].lower() == "bearer " and hmac.compare_digest(
        bearer[7:].strip().encode(), token.encode()
    ):
        return True
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == SESSION_COOKIE and hmac.compare_digest(
            value.encode(), session_value(token).encode()
        ):
            return True
    return False


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path of this site only (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/customers"
    return target


Render = Callable[..., Response]


class TokenGate:
    """401 with the login form for any request without the token, when one is set."""

    def __init__(self, app: ASGIApp, token: str, render: Render) -> None:
        self.app, self.token, self.render = app, token, render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and self.token
            and not scope["path"].startswith(_OPEN_PATHS)
            and not authorized(scope, self.token)
        ):
            target = scope["path"]
            if scope.get("query_string"):
                target += "?" + scope["query_string"].decode("latin-1")
            response = self.render("login.html", 401, next=target, failed=False)
            response.headers["WWW-Authenticate"] = 'Bearer realm="cdp ui"'
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def login_routes(token: str, render: Render) -> tuple[Callable, Callable]:
    """GET /login (the form) and POST /login (checks the token, sets the cookie)."""

    def form(request: Request) -> Response:
        return render("login.html", 200, next=safe_next(request.query_params.get("next")))

    async def submit(request: Request) -> Response:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > _MAX_LOGIN_BODY:
                return render("login.html", 400, next="/customers", failed=True)
        fields = parse_qs(body.decode("utf-8", "replace"))
        given = (fields.get("token") or [""])[0]
        target = safe_next((fields.get("next") or [""])[0])
        if not token or not hmac.compare_digest(given.encode(), token.encode()):
            return render("login.html", 401, next=target, failed=True)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            SESSION_COOKIE, session_value(token), httponly=True, samesite="strict", path="/"
        )
        return response

    return form, submit
