"""The explorer across publishes, forgets and its guard: a store of its own per
test module, since these tests change it while the server runs."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
from urllib.parse import quote

import duckdb
import pytest

from cdp.errors import ConfigError
from cdp.processing.activation.privacy import forget_customer
from cdp.processing.segmentation.config import load_segment_config
from cdp.storage.database import connect
from cdp.ui.auth import SESSION_COOKIE, is_loopback
from cdp.ui.server import UiServer
from tests.ui.conftest import LINK, make_store, request, start_server

TOKEN = "s3cret-token-for-tests-0123"


@pytest.fixture(scope="module")
def living(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("ui-living"))


def _customer(store, identifier: str) -> str | None:
    with duckdb.connect(str(store.analyst), read_only=True) as con:
        rows = con.execute(
            "SELECT customer_id FROM customer_identities WHERE identifier = $i", {"i": identifier}
        ).fetchall()
    return rows[0][0] if rows else None


def test_a_publish_is_picked_up_and_an_open_page_keeps_working(living):
    """Bob's device is linked to Ann's user id by a later event; the next publish
    merges them. The server, never restarted, serves the new snapshot, and requests
    running throughout the publish all succeed."""
    server = start_server(living)
    try:
        ann, bob = _customer(living, "user:ann-42"), _customer(living, "anon:anon-bob")
        assert ann != bob
        assert request(server, f"/customers/{bob}").status == 200
        opened = server.snapshot.opened
        failures: list[str] = []
        stop = threading.Event()

        def keep_reading() -> None:  # a person clicking through pages during the publish
            while not stop.is_set():
                for path in (f"/customers/{ann}", "/segments", "/customers?q=customer.2"):
                    answer = request(server, path)
                    if answer.status not in (200, 303):
                        failures.append(f"{path}: {answer.status} {answer.body[:300]}")

        reader = threading.Thread(target=keep_reading)
        reader.start()
        try:
            living.load_and_publish(LINK, "link.jsonl")
        finally:
            stop.set()
            reader.join()
        assert failures == []
        # The merged-away id now leads to the survivor, by URL and by search.
        answer = request(server, f"/customers/{bob}")
        assert answer.status == 303 and answer.headers["location"] == f"/customers/{ann}"
        found = request(server, f"/customers?q={bob}")
        assert found.headers["location"] == f"/customers/{ann}"
        assert request(server, "/customers?q=bob.b%40example.org").headers["location"] == (
            f"/customers/{ann}"
        )
        page = request(server, f"/customers/{ann}").body
        assert bob in page and "merged into this customer" in page
        assert server.snapshot.opened > opened
    finally:
        server.stop()


def test_a_forgotten_customer_is_gone_after_the_republish(living):
    server = start_server(living)
    try:
        victim = _customer(living, "email:customer.3@example.com")
        assert request(server, f"/customers/{victim}").status == 200
        settings = living.settings
        with connect(settings.storage.db_path) as con:
            forget_customer(con, settings, load_segment_config(settings), victim)
        assert request(server, f"/customers/{victim}").status == 404
        search = request(server, "/customers?q=customer.3%40example.com")
        assert search.status == 200 and victim not in search.body
        prefix = request(server, "/customers?q=customer.3").body
        assert victim not in prefix
    finally:
        server.stop()


def test_token_required_for_every_page_once_set(living):
    server = start_server(living, access_token=TOKEN)
    try:
        bare = request(server, "/customers?q=x")
        assert bare.status == 401 and 'name="token"' in bare.body
        assert request(server, "/segments/champions/members.csv").status == 401
        assert request(server, "/report").status == 401
        assert request(server, "/static/style.css").status == 200  # the login page's style
        wrong = {"Authorization": "Bearer not-the-token-at-all"}
        assert request(server, "/segments", headers=wrong).status == 401
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        assert request(server, "/segments", headers=bearer).status == 200
        # A browser logs in once; the cookie carries it from then on.
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        failed = request(server, "/login", "POST", form, b"token=nope&next=/segments")
        assert failed.status == 401 and SESSION_COOKIE not in failed.headers.get("set-cookie", "")
        login = request(
            server, "/login", "POST", form, f"token={quote(TOKEN)}&next=/segments".encode()
        )
        assert login.status == 303 and login.headers["location"] == "/segments"
        cookie = login.headers["set-cookie"].split(";")[0]
        assert TOKEN not in cookie and "HttpOnly" in login.headers["set-cookie"]
        assert request(server, "/segments", headers={"Cookie": cookie}).status == 200
        assert request(server, "/segments", headers={"Cookie": cookie + "x"}).status == 401
        # No open redirect through next=.
        away = request(
            server, "/login", "POST", form, f"token={quote(TOKEN)}&next=//evil.test/".encode()
        )
        assert away.headers["location"] == "/customers"
        assert request(server, "/customers", "DELETE", {"Cookie": cookie}).status == 405
    finally:
        server.stop()


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "[::]:0", "192.0.2.1:0", "example.com:0"])
def test_a_non_loopback_bind_without_token_is_refused(living, listen):
    settings = living.settings.model_copy(
        update={"ui": living.settings.ui.model_copy(update={"listen": listen})}
    )
    with pytest.raises(ConfigError, match=r"ui\.access_token"):
        UiServer(settings, living.analyst, living.folder / "r.html")


def test_loopback_addresses():
    assert is_loopback("127.0.0.1") and is_loopback("[::1]") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("") and not is_loopback("host")


def test_the_command_refuses_a_public_bind_with_a_clear_error(living, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "cdp", "ui", "--db", str(living.settings.storage.db_path),
         "--listen", "0.0.0.0:0"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("error: ui.listen: 0.0.0.0:0 is reachable")
    assert "Traceback" not in result.stderr


def test_before_any_publish_pages_say_so(living, tmp_path):
    settings = living.settings.model_copy(
        update={"ui": living.settings.ui.model_copy(update={"listen": "127.0.0.1:0"})}
    )
    server = UiServer(settings, tmp_path / "none.analyst.duckdb", tmp_path / "none.html")
    server.start()
    try:
        for path in ("/customers?q=ann", "/segments", "/operations"):
            answer = request(server, path)
            assert answer.status == 503 and "is published by every build" in answer.body
        assert request(server, "/report").status == 404
    finally:
        server.stop()


def test_a_bad_token_is_refused_without_echoing_it(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "cdp", "ui", "--db", str(tmp_path / "x.duckdb")],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**os.environ, "CDP_UI__ACCESS_TOKEN": "tooshort"},
    )  # fmt: skip
    assert result.returncode == 2
    assert "ui.access_token: Value error, must be at least 16 characters" in result.stderr
    assert "tooshort" not in result.stderr


def test_a_segment_added_to_the_segments_file_shows_without_a_restart(living, tmp_path):
    from cdp.processing.segmentation.config import segments_file

    segments = tmp_path / "segments.toml"
    segments.write_text(segments_file(living.settings)[1])
    settings = living.settings.model_copy(
        update={"segments": living.settings.segments.model_copy(update={"file": str(segments)})}
    )
    server = start_server(dataclasses.replace(living, settings=settings))
    try:
        assert request(server, "/segments/vip_testers").status == 404
        segments.write_text(
            segments.read_text()
            + '\n[[segments]]\nname = "vip_testers"\ndescription = "Added while cdp ui runs."\n'
            + 'rule = "orders >= 3"\ndestinations = []\nconsent = "none"\n'
        )
        assert "vip_testers" in request(server, "/segments").body
        assert request(server, "/segments/vip_testers").status == 200
        # Half-edited: the last good segments stay, pages keep working.
        segments.write_text(segments.read_text() + "\n[[segments]\nname = ")
        assert "vip_testers" in request(server, "/segments").body
        assert request(server, "/segments/champions").status == 200
    finally:
        server.stop()
