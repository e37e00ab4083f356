"""A real store for the explorer's tests: generated, loaded, built and published by
the pipeline, plus a few hand-written customers whose identifiers the tests search
for, and a real ``cdp ui`` server on a free loopback port."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest

from cdp.ingest.generator import generate_store
from cdp.ingest.loader import load_file
from cdp.ingest.validation import ValidationLimits
from cdp.processing.jobs.pipeline import build_and_publish
from cdp.processing.segmentation.config import load_segment_config
from cdp.settings import Settings
from cdp.storage.database import connect
from cdp.storage.paths import analyst_path, report_path
from cdp.ui.server import UiServer

PAGE_SIZE = 10
_CONTEXT = {"channel": "web", "locale": "en-GB"}


def _event(event_id: str, type_: str, at: str, **fields: object) -> str:
    return json.dumps(
        {"event_id": event_id, "type": type_, "timestamp": at, "context": _CONTEXT, **fields}
    )


# Ann: every identifier kind, written untidily; an order with a refund.
ANN = [
    _event(
        "ui-ann-1",
        "identify",
        "2026-10-01T10:00:00+00:00",
        anonymous_id="anon-ann",
        user_id="ann-42",
        traits={
            "email": "  Ann.Smith@Example.COM ",
            "phone": "+44 (20) 7946-0018",
            "consent": {"email": True, "sms": False},
        },
    ),
    _event(
        "ui-ann-2",
        "product_viewed",
        "2026-10-01T10:01:00+00:00",
        anonymous_id="anon-ann",
        properties={"product_id": "p-0001", "name": "Cake #1", "category": "cakes", "price": "30"},
    ),
    _event(
        "ui-ann-3",
        "order_completed",
        "2026-10-01T10:05:00+00:00",
        anonymous_id="anon-ann",
        user_id="ann-42",
        properties={
            "order_id": "ord-ann-1",
            "total": "120.00",
            "currency": "USD",
            "products": [{"product_id": "p-0001", "price": "60", "quantity": 2}],
        },
    ),
    _event(
        "ui-ann-4",
        "order_refunded",
        "2026-10-03T09:00:00+00:00",
        user_id="ann-42",
        properties={"order_id": "ord-ann-1", "total": "20.00", "currency": "USD"},
    ),
]
# Bob: a separate visitor until an identify links his device to Ann's user id.
BOB = [
    _event(
        "ui-bob-1",
        "identify",
        "2026-10-05T12:00:00+00:00",
        anonymous_id="anon-bob",
        traits={"email": "bob.b@example.org"},
    ),
]
LINK = [
    _event(
        "ui-link-1",
        "identify",
        "2026-10-06T12:00:00+00:00",
        anonymous_id="anon-bob",
        user_id="ann-42",
    ),
]


@dataclass
class UiStore:
    settings: Settings
    folder: Path

    def load_and_publish(self, lines: list[str], name: str) -> None:
        path = self.folder / name
        with path.open("ab") as out:  # after what is there (the generator's bytes)
            out.write(("\n".join(lines) + "\n").encode())
        with connect(self.settings.storage.db_path) as con:
            load_file(con, path, limits=ValidationLimits.from_settings(self.settings.ingest))
            build_and_publish(con, self.settings, load_segment_config(self.settings))

    @property
    def analyst(self) -> Path:
        return analyst_path(self.settings)


def make_store(folder: Path) -> UiStore:
    settings = Settings(storage={"db_path": folder / "store.duckdb"})
    store = UiStore(settings, folder)
    generate_store(folder / "first.jsonl", customers=300, seed=7, end=date(2026, 11, 1))
    store.load_and_publish(ANN + BOB, "first.jsonl")
    return store


@pytest.fixture(scope="module")
def ui_store(tmp_path_factory: pytest.TempPathFactory) -> UiStore:
    """Built and published once per module; tests that publish again say so."""
    return make_store(tmp_path_factory.mktemp("ui-store"))


def start_server(store: UiStore, **ui: object) -> UiServer:
    settings = store.settings.model_copy(
        update={"ui": store.settings.ui.model_copy(update={"listen": "127.0.0.1:0", **ui})}
    )
    server = UiServer(settings, store.analyst, report_path(store.settings))
    server.start()
    return server


@pytest.fixture(scope="module")
def ui_server(ui_store: UiStore) -> Iterator[UiServer]:
    server = start_server(ui_store, page_size=PAGE_SIZE)  # small: a small store has pages
    yield server
    server.stop()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: str


def request(
    server: UiServer,
    path: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> Answer:
    """One request, redirects not followed (the tests check them)."""
    host, _, port = server.address.rpartition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        answer = connection.getresponse()
        text = answer.read().decode("utf-8", "replace")
        return Answer(answer.status, {k.lower(): v for k, v in answer.getheaders()}, text)
    finally:
        connection.close()
