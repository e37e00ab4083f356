"""The explorer driven in a real headless Chromium by Selenium (Debian's ``chromium``
and ``chromium-driver``, installed by the fixtures when missing), as a person uses it:
type an email into the search box, read the customer page, open a segment, page
through its members, filter them and download the CSV. Screenshots of the pages go to
test-artifacts/ui-*.png for a person to look at."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.browser import FLAGS, LOCAL_ONLY, find_or_install
from tests.ui.conftest import PAGE_SIZE, request

ARTIFACTS = Path(os.environ.get("CDP_TEST_ARTIFACTS", Path(__file__).parents[2] / "test-artifacts"))


@pytest.fixture(scope="module")
def browser(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    driver_path = find_or_install("chromedriver", "chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in [*FLAGS, LOCAL_ONLY, "--window-size=1300,2000"]:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('selenium-profile')}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.implicitly_wait(5)
    yield driver
    driver.quit()


def _url(server, path: str) -> str:
    return f"http://{server.address}{path}"


def _shoot(browser: webdriver.Chrome, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / name
    shot.unlink(missing_ok=True)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1300, min(max(height, 800), 4000))
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 30_000  # a laid-out page, not a blank one


def test_a_support_agent_finds_a_customer_by_email(ui_server, ui_store, browser):
    browser.get(_url(ui_server, "/customers"))
    box = browser.find_element(By.CSS_SELECTOR, "form.big-search input[name=q]")
    box.send_keys(" Ann.Smith@EXAMPLE.com")  # as spelled on the phone
    box.submit()
    WebDriverWait(browser, 10).until(lambda b: "/customers/cus_" in b.current_url)
    assert browser.find_element(By.TAG_NAME, "h1").text == "ann.smith@example.com"
    assert "/customers/cus_" in browser.current_url
    orders = browser.find_element(By.ID, "orders").text
    assert "ord-ann-1" in orders and "120.00" in orders and "20.00" in orders
    clv = browser.find_element(By.CSS_SELECTOR, "table.clv").text
    for variant in ("Historic CLV", "Basic CLV", "Advanced CLV", "Predicted CLV"):
        assert variant in clv
    timeline = browser.find_element(By.ID, "timeline")
    assert "order_refunded" in timeline.text and "product_viewed" in timeline.text
    _shoot(browser, "ui-customer-ann.png")
    timeline.find_element(By.LINK_TEXT, "purchase").click()
    WebDriverWait(browser, 10).until(lambda b: "family=purchase" in b.current_url)
    rows = browser.find_elements(By.CSS_SELECTOR, "#timeline tbody tr")
    assert rows and all("purchase" in row.text for row in rows)


def test_a_marketer_pages_filters_and_downloads_a_segment(ui_server, ui_store, browser):
    with duckdb.connect(str(ui_store.analyst), read_only=True) as con:
        segment, size = con.execute(
            "SELECT segment, count(*) FROM segment_members GROUP BY 1 ORDER BY 2 DESC LIMIT 1"
        ).fetchall()[0]
        champion = con.execute(
            "SELECT customer_id FROM customer_profiles WHERE rfm_segment = 'Champions' "
            "ORDER BY orders DESC, customer_id LIMIT 1"
        ).fetchall()[0][0]
    browser.get(_url(ui_server, "/segments"))
    browser.find_element(By.LINK_TEXT, segment).click()
    assert browser.find_element(By.TAG_NAME, "h1").text == segment
    first = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "table.members tbody a")]
    assert len(first) == PAGE_SIZE
    browser.find_element(By.PARTIAL_LINK_TEXT, "next").click()
    WebDriverWait(browser, 10).until(lambda b: "page=2" in b.current_url)
    second = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "table.members tbody a")]
    assert "page 2 of" in browser.find_element(By.CSS_SELECTOR, "#members .pager").text
    assert second and not set(first) & set(second)
    _shoot(browser, "ui-segment.png")

    Select(browser.find_element(By.NAME, "tier")).select_by_visible_text("bronze")
    Select(browser.find_element(By.NAME, "sort")).select_by_value("orders")
    browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
    WebDriverWait(browser, 10).until(lambda b: "tier=bronze" in b.current_url)
    link = browser.find_element(By.LINK_TEXT, "Download CSV").get_attribute("href")
    assert "tier=bronze" in link and "sort=orders" in link
    rows = list(
        csv.DictReader(io.StringIO(request(ui_server, link.split(ui_server.address)[1]).body))
    )
    with duckdb.connect(str(ui_store.analyst), read_only=True) as con:
        expected = con.execute(
            "SELECT m.customer_id FROM segment_membership m JOIN customer_profiles p "
            "USING (customer_id) WHERE m.segment = $s AND p.loyalty_tier = 'bronze' "
            "ORDER BY p.orders DESC NULLS LAST, m.customer_id",
            {"s": segment},
        ).fetchall()
    assert [row["customer_id"] for row in rows] == [row[0] for row in expected]
    assert 0 < len(rows) <= size

    browser.get(_url(ui_server, f"/customers/{champion}"))
    _shoot(browser, "ui-customer.png")


def test_a_page_open_across_a_publish_keeps_working(browser, tmp_path_factory):
    """A person has a customer open while the service publishes a new snapshot (here:
    the one that merges Bob's device into Ann); their next click reads the new data,
    with no restart of the app."""
    from tests.ui.conftest import LINK, make_store, start_server

    store = make_store(tmp_path_factory.mktemp("ui-browser-publish"))
    server = start_server(store)
    try:
        browser.get(_url(server, "/customers?q=ann-42"))
        WebDriverWait(browser, 10).until(lambda b: "/customers/cus_" in b.current_url)
        ann_page = browser.current_url
        identifiers = browser.find_element(By.TAG_NAME, "main").text
        assert "anon:anon-bob" not in identifiers
        store.load_and_publish(LINK, "link.jsonl")
        browser.find_element(By.LINK_TEXT, "identify").click()  # the open page's next click
        WebDriverWait(browser, 10).until(lambda b: "family=identify" in b.current_url)
        page = browser.find_element(By.TAG_NAME, "main").text
        assert "anon:anon-bob" in page and "merged into this customer" in page
        assert "bob.b@example.org" in page  # Bob's identify is Ann's now
        assert browser.current_url.startswith(ann_page)
    finally:
        server.stop()
