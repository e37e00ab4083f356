"""The access token: what stands between the explorer's personal data and a network.

On loopback with no token configured, nothing is asked, but only requests addressed to
this machine are answered: a ``Host`` that is not localhost or a loopback address (a
web page that rebound its own name to 127.0.0.1, "DNS rebinding") or a request relayed
by a proxy (``Forwarded`` / ``X-Forwarded-*``, which would publish the pages to whoever
reaches the proxy) gets a 421 saying to set a token. With ``ui.access_token`` set
(required to bind anything else: :mod:`cdp.ui.server`), every request but the login
page and the static assets must carry either the header ``Authorization: Bearer
<token>`` (scripts) or the session cookie a login sets (browsers). The cookie holds
an HMAC of the token, not the token, and is HttpOnly and SameSite=Strict. Every
comparison is constant-time (``hmac.compare_digest``).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Callable
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

SESSION_COOKIE = "cdp_ui_session"
_MAX_LOGIN_BODY = 4096
_OPEN_PATHS = ("/login", "/static/")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 in brackets or not) is this machine."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def addressed_locally(scope: Scope) -> bool:
    """The request names this machine in ``Host`` and came straight, not via a proxy."""
    headers = _headers(scope)
    if "forwarded" in headers or any(name.startswith("x-forwarded-") for name in headers):
        return False
    host = headers.get("host", "")
    if host.startswith("["):  # [::1]:8089
        host = host[1:].partition("]")[0]
    else:
        host = host.rpartition(":")[0] if host.count(":") == 1 else host
    return is_loopback(host)


def session_value(token: str) -> str:
    return hmac.new(token.encode(), b"cdp ui session v1", hashlib.sha256).hexdigest()


def authorized(scope: Scope, token: str) -> bool:
    headers = _headers(scope)
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
    """401 with the login form for any request without the token, when one is set;
    421 for any request not addressed to this machine, when none is."""

    def __init__(self, app: ASGIApp, token: str, render: Render) -> None:
        self.app, self.token, self.render = app, token, render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.token and not addressed_locally(scope):
            response = self.render(
                "message.html",
                421,
                title="Not addressed to this machine",
                message="With no ui.access_token the explorer answers only requests made "
                "on this machine to localhost or 127.0.0.1, not through another name or "
                "a proxy. To serve it beyond this machine, set ui.access_token.",
            )
            await response(scope, receive, send)
            return
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
