"""analytics.js in a real browser, through `cdp collect`, into the store.

Headless Chromium (Debian's, see tests/browser.py) opens a shop page
(browser_page.html) served from one origin, ``http://localhost:PAGE``, that loads
analytics.js — @segment/analytics-next from npm (its UMD build, installed with ``npm``
into a cache directory) — and sends to the collector on another origin,
``http://127.0.0.1:COLLECTOR``. The Segment CDN settings are passed inline
(``cdnSettings``), so analytics.js needs no network but the two servers, and every
host name but the machine's own is made unresolvable.

What analytics.js 1.84 sends, as recorded from this page (the assertions below hold
the collector to it):

- one ``POST`` per call to the short paths ``/v1/p``, ``/v1/t``, ``/v1/i`` — or, with
  the batching delivery strategy, ``/v1/b`` with ``{writeKey, batch, sentAt}`` — its
  body JSON labelled ``Content-Type: text/plain``, with ``writeKey`` in each event and
  ``Authorization: Basic base64(writeKey + ":")``; each event's ``messageId`` is
  ``ajs-next-<ms>-<uuid>``;
- ``X-Retry-Count: N`` only on a retry, which carries the same ``messageId``s;
- ``Authorization`` and ``X-Retry-Count`` are not CORS-safelisted headers, so Chromium
  preflights each path (``OPTIONS``, ``Access-Control-Request-Headers:
  authorization``, or ``authorization,x-retry-count`` for a retry), then caches the
  answer per URL and header set.

The page wraps ``window.fetch`` (analytics.js sends through it) to record each request
and its answer, and loses the response to the request carrying "Order Completed" once,
after the collector answered it: analytics.js then sends it again as in the field, so
the collector sees a real duplicate. The page writes what happened into its DOM for
``chromium --dump-dom`` (with ``--virtual-time-budget``, which waits for network
fetches and skips analytics.js' timers); Chromium's net log shows the preflights.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import duckdb
import pytest

from cdp.ingest.broker import free_port
from tests.browser import LOCAL_ONLY, find_or_install, run_chromium
from tests.ingest.collector.conftest import WEB_KEY

pytestmark = pytest.mark.kafka

ANALYTICS_NEXT = "1.84.3"  # pinned: the version whose requests the docstring describes
PAGE = Path(__file__).with_name("browser_page.html")
CACHE = Path(os.environ.get("CDP_TEST_CACHE", Path.home() / ".cache" / "cdp-tests"))
LOST = "Order Completed"  # the event whose first answer the page loses
BASIC = "Basic " + base64.b64encode(f"{WEB_KEY}:".encode()).decode()
EXPECTED = {  # analytics.js call -> (canonical type, family)
    ("page", None): ("page_viewed", "browse"),
    ("track", "Product Viewed"): ("product_viewed", "browse"),
    ("identify", None): ("identify", "identify"),
    ("track", "Order Completed"): ("order_completed", "purchase"),
}


@pytest.fixture(scope="session")
def analytics_next() -> Path:
    """The UMD build of @segment/analytics-next, installed once with npm into a cache."""
    home = CACHE / f"analytics-next-{ANALYTICS_NEXT}"
    umd = home / "node_modules" / "@segment" / "analytics-next" / "dist" / "umd"
    if (umd / "index.js").is_file():
        return umd
    npm = find_or_install("npm", "npm")
    staging = home.with_name(f"{home.name}.{os.getpid()}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    done = subprocess.run(
        [
            npm,
            "install",
            "--prefix",
            str(staging),
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
            "--loglevel=error",
            f"@segment/analytics-next@{ANALYTICS_NEXT}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"npm install failed:\n{done.stderr[-3000:]}"
    try:
        staging.rename(home)  # whole or not at all, should another run install it too
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
    assert (umd / "index.js").is_file(), f"no dist/umd/index.js in {home}"
    return umd


@dataclass
class PageServer:
    port: int
    fetched: list[str] = field(default_factory=list)


@pytest.fixture
def page_server(analytics_next: Path) -> Iterator[PageServer]:
    """Serves the page at / and analytics.js' bundles at /analytics-next/bundles/."""
    bundles = {path.name: path for path in analytics_next.glob("*.js")}
    server_state = PageServer(0)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            server_state.fetched.append(path)
            name = path.removeprefix("/analytics-next/bundles/")
            if path == "/":
                file, kind = PAGE, "text/html; charset=utf-8"
            elif name in bundles:
                file, kind = bundles[name], "text/javascript"
            else:
                self.send_error(404)
                return
            data = file.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    server_state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server_state
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@dataclass
class Visit:
    result: dict[str, Any]  # what the page wrote: calls, ids, its requests and their answers
    cors: list[dict[str, Any]]  # Chromium's net log: each cross-origin request to the collector


def visit(chromium: str, tmp_path: Path, page_url: str, collector_url: str, **query: str) -> Visit:
    net_log = tmp_path / "netlog.json"
    url = page_url + "/?" + urlencode(query, quote_via=quote)
    run = run_chromium(
        chromium,
        tmp_path / "profile",
        LOCAL_ONLY,
        f"--log-net-log={net_log}",
        "--virtual-time-budget=30000",
        "--dump-dom",
        url,
        timeout=90,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    found = re.search(r'<pre id="result">(.*?)</pre>', run.stdout, re.S)
    assert found, f"the page did not render:\n{run.stdout[-2000:]}"
    text = html.unescape(found.group(1))
    assert text != "pending", "the page did not finish within the virtual time budget"
    return Visit(json.loads(text), cors_requests(net_log, collector_url))


def cors_requests(net_log: Path, collector_url: str) -> list[dict[str, Any]]:
    """The fetches to the collector as Chromium's network stack saw them: method, URL,
    whether a preflight was required, sent or answered from the cache, its status, and
    whether CORS let the request through."""
    text = net_log.read_text()
    try:
        log = json.loads(text)
    except json.JSONDecodeError:  # a log cut short at exit: close it as Chromium would
        log = json.loads(text.rstrip().rstrip(",") + "]}")
    names = {number: name for name, number in log["constants"]["logEventTypes"].items()}
    by_source: dict[int, list[tuple[str, dict]]] = {}
    for entry in log["events"]:
        by_source.setdefault(entry["source"]["id"], []).append(
            (names[entry["type"]], entry.get("params") or {})
        )

    def status_of(source: int) -> int | None:
        for name, params in by_source.get(source, []):
            if name == "HTTP_TRANSACTION_READ_RESPONSE_HEADERS" and params.get("headers"):
                return int(params["headers"][0].split()[1])
        return None

    requests = []
    for source, entries in by_source.items():
        found = dict(entries)  # the last params of each event type (a begin's are first)
        begun = next((p for n, p in entries if n == "CORS_REQUEST" and "url" in p), None)
        if begun is None or not begun["url"].startswith(collector_url + "/"):
            continue
        preflight = found.get("CORS_PREFLIGHT_URL_REQUEST", {}).get("source_dependency")
        requests.append(
            {
                "method": begun["request_headers"]["line"].split()[0],
                "path": urlsplit(begun["url"]).path,
                "preflight_required": found.get("CHECK_CORS_PREFLIGHT_REQUIRED", {}).get(
                    "preflight_required"
                ),
                "preflight": (
                    "sent"
                    if preflight
                    else "cached"
                    if "CORS_PREFLIGHT_CACHED_RESULT" in found
                    else None
                ),
                "preflight_status": status_of(preflight["id"]) if preflight else None,
                "preflight_allowed": (
                    found.get("CORS_PREFLIGHT_RESULT") or found.get("CORS_PREFLIGHT_CACHED_RESULT")
                ),
                "preflight_error": found.get("CORS_PREFLIGHT_ERROR"),
                "status": status_of(source),  # None: the request itself was never sent
            }
        )
    return requests


def stored_events(db_path: Path) -> list[dict[str, Any]]:
    with duckdb.connect(str(db_path), read_only=True) as con:
        rows = con.execute(
            "SELECT event_id, type, family, user_id, anonymous_id, payload FROM events"
        ).fetchall()
    columns = ("event_id", "type", "family", "user_id", "anonymous_id", "payload")
    return [dict(zip(columns, row, strict=True)) | {"payload": json.loads(row[5])} for row in rows]


@pytest.mark.parametrize("mode", ["standard", "batching"])
def test_analytics_js_in_chromium_sends_across_origins_and_each_event_is_stored_once(
    mode, chromium, page_server, collector_factory, tmp_path
):
    page_origin = f"http://localhost:{page_server.port}"
    collector = collector_factory(
        sources=[{"name": "web", "write_key": WEB_KEY, "allowed_origins": [page_origin]}]
    )
    visit_ = visit(
        chromium,
        tmp_path,
        page_origin,
        collector.url,
        writeKey=WEB_KEY,
        apiHost=collector.url.removeprefix("http://") + "/v1",
        mode=mode,
        lose=LOST,
    )
    page = visit_.result
    assert page.get("error") is None, page["error"]
    assert page["delivered"], json.dumps(page["requests"], indent=1)
    anonymous_id, sent = page["anonymousId"], page["sent"]
    assert [(s["type"], s["event"]) for s in sent] == list(EXPECTED)
    assert page["userId"] == "user-42"
    assert all(re.fullmatch(r"ajs-next-\d{13}-[0-9a-f-]{36}", s["messageId"]) for s in sent)
    assert page_server.fetched[:2] == ["/", "/analytics-next/bundles/index.js"]
    # index.js alone: analytics.js loaded no lazy chunk (nor, with names blocked, any CDN).
    assert not [p for p in page_server.fetched if p.startswith("/analytics-next/bundles/")][1:]

    # What analytics.js sent and how the collector answered, as the page saw it: the
    # short paths, text/plain, Basic auth; the lost request sent again with the same
    # messageIds and X-Retry-Count: 1; every answer 200 {"success": true} (a CORS
    # refusal would be a TypeError and no status).
    requests = page["requests"]
    paths = [urlsplit(r["url"]).path for r in requests]
    expected_paths = ["/v1/p", "/v1/t", "/v1/i", "/v1/t", "/v1/t"]
    assert paths == (expected_paths if mode == "standard" else ["/v1/b", "/v1/b"])
    for request in requests:
        assert request["url"].startswith(collector.url + "/v1/"), request
        assert request["method"] == "POST", request
        assert request["headers"]["Content-Type"] == "text/plain", request
        assert request["headers"]["Authorization"] == BASIC, request
        assert (request["error"], request["status"]) == (None, 200), request
        assert json.loads(request["reply"]) == {"success": True}, request
    *first_tries, retry = requests
    assert [r["lost"] for r in requests] == [False] * (len(requests) - 2) + [True, False]
    assert all("X-Retry-Count" not in r["headers"] for r in first_tries)
    assert retry["headers"]["X-Retry-Count"] == "1"
    assert retry["events"] == first_tries[-1]["events"]
    assert LOST in {e["event"] for e in retry["events"]}

    # The browser preflighted the collector and was let through: each POST needed a
    # preflight (Authorization is not safelisted), the collector answered it with 204
    # and the headers analytics.js sends, and no request failed CORS.
    cors = visit_.cors
    posts = [r for r in cors if r["method"] == "POST"]
    assert [r["path"] for r in posts] == paths, cors
    for post in posts:
        assert post["preflight_required"] is True, post
        assert post["preflight"] in ("sent", "cached"), post
        assert post["preflight_error"] is None and post["preflight_allowed"], post
        assert post["status"] == 200, post
    # One preflight per path, answered 204; the later requests to a path may use
    # Chromium's preflight cache (the collector allows X-Retry-Count from the start).
    first_of_path = [post for i, post in enumerate(posts) if post["path"] not in paths[:i]]
    assert all(
        (post["preflight"], post["preflight_status"]) == ("sent", 204) for post in first_of_path
    ), cors
    assert all(post["preflight_status"] in (None, 204) for post in posts), cors
    allowed = posts[-1]["preflight_allowed"]["access-control-allow-headers"].lower()
    assert {"authorization", "x-retry-count"} <= {h.strip() for h in allowed.split(",")}

    # Into the store: each event once, under analytics.js' messageId, with its
    # canonical type, the anonymousId analytics.js made, the userId from identify on.
    collector.ingest()
    stored = stored_events(collector.settings.storage.db_path)
    assert sorted(row["event_id"] for row in stored) == sorted(s["messageId"] for s in sent)
    by_id = {row["event_id"]: row for row in stored}
    for position, call in enumerate(sent):
        row = by_id[call["messageId"]]
        canonical, family = EXPECTED[(call["type"], call["event"])]
        assert (row["type"], row["family"]) == (canonical, family), row
        assert row["anonymous_id"] == anonymous_id, row
        assert row["user_id"] == ("user-42" if position >= 2 else None), row
        payload = row["payload"]
        assert payload["messageId"] == call["messageId"]
        assert payload["context"]["source"] == "web"
        assert payload["context"]["library"] == {
            "name": "analytics.js",
            "version": f"next-{ANALYTICS_NEXT}",
        }
        assert "writeKey" not in payload  # the source is named; the key is not stored
    page_viewed, product_viewed, identify, order = (by_id[s["messageId"]] for s in sent)
    assert page_viewed["payload"]["properties"]["category"] == "cakes"
    assert page_viewed["payload"]["name"] == "Catalog"
    assert product_viewed["payload"]["properties"]["product_id"] == "sku-7"
    assert identify["payload"]["traits"] == {"email": "ada@example.com", "first_name": "Ada"}
    assert order["payload"]["properties"]["order_id"] == "o-1001"
    assert order["payload"]["properties"]["total"] == 30.5


def test_a_page_on_an_origin_no_source_allows_is_refused_at_the_preflight(
    chromium, page_server, collector_factory, tmp_path
):
    allowed = f"http://localhost:{page_server.port}"
    refused = f"http://127.0.0.1:{page_server.port}"  # same page, another origin
    collector = collector_factory(
        sources=[{"name": "web", "write_key": WEB_KEY, "allowed_origins": [allowed]}]
    )
    visit_ = visit(
        chromium,
        tmp_path,
        refused,
        collector.url,
        writeKey=WEB_KEY,
        apiHost=collector.url.removeprefix("http://") + "/v1",
        mode="standard",
    )
    page = visit_.result
    assert page.get("error") is None, page["error"]
    assert page["delivered"] is False
    assert page["requests"], "analytics.js sent nothing"
    for request in page["requests"]:  # fetch() fails: the page never sees an answer
        assert request["status"] is None and "TypeError" in request["error"], request

    preflights = [r for r in visit_.cors if r["method"] == "POST"]
    assert preflights, visit_.cors
    for request in preflights:
        assert request["preflight"] == "sent" and request["preflight_status"] == 403, request
        assert request["preflight_error"] is not None, request
        assert request["status"] is None, request  # the POST itself was never sent

    collector.ingest()
    assert stored_events(collector.settings.storage.db_path) == []
