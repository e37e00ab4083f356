"""The explorer in a real headless Chromium: the pages a person opens, rendered and
saved as screenshots (test-artifacts/ui-*.png) for a person to look at."""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import quote

import duckdb

from tests.browser import run_chromium
from tests.ui.conftest import PAGE_SIZE

ARTIFACTS = Path(os.environ.get("CDP_TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts"))


def _url(server, path: str) -> str:
    return f"http://{server.address}{path}"


def test_search_by_email_opens_the_customer_page(ui_server, chromium, tmp_path):
    """What a support agent does: type the email as the caller spells it."""
    url = _url(ui_server, "/customers?q=" + quote(" Ann.Smith@EXAMPLE.com"))
    dom = run_chromium(chromium, tmp_path / "p", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    assert "<h1>ann.smith@example.com</h1>" in page  # the redirect was followed
    assert "ord-ann-1" in page  # orders
    assert "Segments" in page and "Timeline" in page and "order_refunded" in page
    assert "Predicted CLV" in page


def test_screenshots_of_a_customer_and_a_segment(ui_server, ui_store, chromium, tmp_path):
    with duckdb.connect(str(ui_store.analyst), read_only=True) as con:
        customer, segment = con.execute(
            "SELECT customer_id, (SELECT segment FROM segment_members GROUP BY 1 "
            "ORDER BY count(*) DESC LIMIT 1) FROM customer_profiles "
            "WHERE rfm_segment = 'Champions' ORDER BY orders DESC, customer_id LIMIT 1"
        ).fetchall()[0]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for name, path in (
        ("ui-customer.png", f"/customers/{customer}"),
        ("ui-segment.png", f"/segments/{segment}?page=2"),
    ):
        shot = ARTIFACTS / name
        shot.unlink(missing_ok=True)
        result = run_chromium(
            chromium, tmp_path / name, "--window-size=1300,2200", f"--screenshot={shot}",
            _url(ui_server, path),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        assert shot.stat().st_size > 30_000  # a laid-out page, not a blank one
    dom = run_chromium(
        chromium, tmp_path / "dom", "--dump-dom", _url(ui_server, f"/segments/{segment}?page=2")
    ).stdout
    assert "page 2 of" in dom
    assert len(re.findall(r'<tr><td><a href="/customers/', dom)) == PAGE_SIZE
