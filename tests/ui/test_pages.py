"""The customer page, segment pages, CSV, report and operations, as served."""

from __future__ import annotations

import csv
import io
import re
import time

import duckdb
import pytest

from cdp.ui import queries
from cdp.ui.snapshot import AnalystSnapshot
from tests.ui.conftest import PAGE_SIZE, request


def _ann_id(ui_store) -> str:
    with duckdb.connect(str(ui_store.analyst), read_only=True) as con:
        return con.execute(
            "SELECT customer_id FROM customer_identities WHERE identifier = 'user:ann-42'"
        ).fetchall()[0][0]


def test_customer_page_shows_what_cdp_knows(ui_server, ui_store):
    page = request(ui_server, f"/customers/{_ann_id(ui_store)}")
    assert page.status == 200
    body = page.body
    assert "ann.smith@example.com" in body
    for identifier in (
        "anon:anon-ann",
        "user:ann-42",
        "email:ann.smith@example.com",
        "phone:+442079460018",
    ):
        assert identifier in body
    for variant in ("Historic CLV", "Basic CLV", "Advanced CLV", "Predicted CLV"):
        assert variant in body
    assert "Window:" in body and "BG/NBD" in body
    assert "ord-ann-1" in body and "120.00" in body and "20.00" in body  # the refund
    assert re.search(r"<td>email</td><td class=\"ok\">yes</td>", body)
    assert re.search(r"<td>sms</td><td class=\"no\">no</td>", body)
    assert "journey:" in body and "loyalty:" in body
    assert "order_refunded" in body and "product_viewed" in body  # timeline


def test_predicted_clv_names_the_model_the_build_chose_and_its_parameters(ui_server, ui_store):
    with duckdb.connect(str(ui_store.analyst), read_only=True) as con:
        chosen, choice = con.execute(
            "SELECT model, choice FROM clv_model_runs WHERE chosen AND model <> 'gamma_gamma' "
            "AND as_of = (SELECT max(as_of) FROM clv_model_runs)"
        ).fetchall()[0]
    label = {"bgnbd": "BG/NBD", "mbgnbd": "MBG/NBD", "pareto_nbd": "Pareto/NBD"}[chosen]
    body = request(ui_server, f"/customers/{_ann_id(ui_store)}").body
    assert f"{label} expected purchases × Gamma-Gamma spend per order" in body
    run = body[body.index("From the model run of") :]
    run = run[: run.index("</p>")]
    assert f"{label} (r=" in run and "Gamma-Gamma (p=" in run and "q=" in run
    # Only the model in use (the others' fits are in the report's backtest section).
    fits = run.split("<br>")[0]  # the choice's reason may name the others
    assert re.findall(r"(?<![A-Z])(BG/NBD|MBG/NBD|Pareto/NBD) \(", fits) == [label], run
    if choice:
        assert choice.split(":")[0] in run


def test_timeline_filters_by_family_and_pages(ui_server, ui_store):
    with duckdb.connect(str(ui_store.analyst), read_only=True) as con:
        busy, events = con.execute(
            "SELECT customer_id, count(*) FROM customer_events GROUP BY 1 ORDER BY 2 DESC, 1 "
            "LIMIT 1"
        ).fetchall()[0]
    size = PAGE_SIZE
    first = request(ui_server, f"/customers/{busy}").body
    assert f"{events:,} events" in first
    if events > size:
        second = request(ui_server, f"/customers/{busy}?page=2").body
        assert "page 2 of" in second
    only = request(ui_server, f"/customers/{_ann_id(ui_store)}?family=purchase").body
    assert "order_completed" in only and "product_viewed" not in only.split("Timeline")[1]
    assert request(ui_server, f"/customers/{busy}?family=nope").status == 400
    assert request(ui_server, f"/customers/{busy}?page=0").status == 400
    assert request(ui_server, f"/customers/{busy}?page=99999999999").status == 400
    far = request(ui_server, f"/customers/{busy}?page=999")
    assert far.status == 200 and "No events" in far.body


def test_unknown_customer_is_404(ui_server):
    assert request(ui_server, "/customers/cus_nobody").status == 404
    assert request(ui_server, "/customers/" + "x" * 5000).status == 404


def test_segments_list_every_configured_segment(ui_server):
    body = request(ui_server, "/segments").body
    for name in ("welcome", "champions", "abandoned_cart", "lookalike_seed"):
        assert f'href="/segments/{name}"' in body
    assert "rfm_segment = &#39;Champions&#39;" in body


def test_segment_members_page_sort_and_csv_match_sql(ui_server, ui_store):
    with duckdb.connect(str(ui_store.analyst), read_only=True) as con:
        segment = con.execute(
            "SELECT segment FROM segment_membership GROUP BY 1 ORDER BY count(*) DESC LIMIT 1"
        ).fetchall()[0][0]
        expected = con.execute(
            "SELECT m.customer_id FROM segment_membership m JOIN customer_profiles p "
            "USING (customer_id) WHERE m.segment = $s "
            "ORDER BY p.historic_clv DESC NULLS LAST, m.customer_id",
            {"s": segment},
        ).fetchall()
        bronze = con.execute(
            "SELECT count(*) FROM segment_membership m JOIN customer_profiles p "
            "USING (customer_id) WHERE m.segment = $s AND p.loyalty_tier = 'bronze'",
            {"s": segment},
        ).fetchall()[0][0]
    expected = [row[0] for row in expected]
    n = PAGE_SIZE
    assert len(expected) > 2 * n  # pages
    page1 = request(ui_server, f"/segments/{segment}").body
    page2 = request(ui_server, f"/segments/{segment}?page=2").body
    shown1 = re.findall(r'<tr><td><a href="/customers/([^"]+)"', page1)
    shown2 = re.findall(r'<tr><td><a href="/customers/([^"]+)"', page2)
    assert shown1 == expected[:n] and shown2 == expected[n : 2 * n]
    answer = request(ui_server, f"/segments/{segment}/members.csv")
    assert answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.body)))
    assert [row["customer_id"] for row in rows] == expected
    filtered = request(ui_server, f"/segments/{segment}/members.csv?tier=bronze&sort=orders")
    assert len(list(csv.DictReader(io.StringIO(filtered.body)))) == bronze
    ascending = request(ui_server, f"/segments/{segment}?sort=customer&dir=asc").body
    names = re.findall(r'<tr><td><a href="/customers/([^"]+)"', ascending)
    assert names == sorted(expected)[:n]


@pytest.mark.parametrize(
    "query",
    [
        "sort=x;drop",
        "dir=sideways",
        "page=-1",
        "page=abc",
        "page=%C2%B2",  # '²': a digit to str.isdigit, not to int()
        "page=%E2%91%A0",  # '①'
        "page=%D9%A3",  # '٣', Arabic-Indic three: int() reads it, a page number it is not
        "rfm=" + "x" * 1000,
    ],
)
def test_bad_member_parameters_are_400(ui_server, query):
    answer = request(ui_server, f"/segments/champions?{query}")
    assert answer.status == 400, answer.body
    assert (
        "page" in answer.body
        or "sort" in answer.body
        or "dir" in answer.body
        or "rfm" in answer.body
    )


def test_segment_page_has_changes_and_traits(ui_server, ui_store, monkeypatch):
    monkeypatch.setattr(queries, "CHANGES_LISTED", 1)  # fewer listed than entered
    with duckdb.connect(str(ui_store.analyst), read_only=True) as con:
        segment, entered = con.execute(
            "SELECT segment, count(*) FILTER (WHERE entered_at > (SELECT max(as_of) "
            "FROM segment_membership) - INTERVAL 7 DAY) AS n FROM segment_membership_history "
            "GROUP BY segment ORDER BY n DESC, segment LIMIT 1"
        ).fetchall()[0]
    assert entered > 1
    body = request(ui_server, f"/segments/{segment}").body
    assert f"<b>{entered:,}</b> entered" in body and "(the latest 1 of each listed)" in body
    body = request(ui_server, "/segments/champions").body
    assert "What sets them apart" in body and "×</td>" in body
    assert request(ui_server, "/segments/no_such_segment").status == 404


def test_report_and_operations(ui_server):
    report = request(ui_server, "/report")
    assert report.status == 200 and "<svg" in report.body
    ops = request(ui_server, "/operations").body
    assert "Recent builds" in ops and "Dead letters" in ops
    assert "invalid_json" in ops or "invalid_event" in ops  # the generator's bad lines


def test_assets_are_local(ui_server, ui_store):
    page = request(ui_server, f"/customers/{_ann_id(ui_store)}").body
    assert "http://" not in page and "https://" not in page
    css = request(ui_server, "/static/style.css")
    assert css.status == 200 and "font" in css.body
    answer = request(ui_server, "/segments")
    assert answer.headers["cache-control"] == "no-store"
    assert "default-src 'self'" in answer.headers["content-security-policy"]
    assert answer.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_nothing_but_get_and_head(ui_server, method):
    answer = request(ui_server, "/customers", method=method, body=b"x=1")
    assert answer.status == 405
    assert request(ui_server, "/customers", method="HEAD").status == 200


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "attacker.example"},  # a page that rebound its own name to 127.0.0.1
        {"Host": "attacker.example:8089"},
        {"Host": "127.0.0.1.nip.io"},
        {"X-Forwarded-For": "203.0.113.9"},  # relayed by a proxy: published beyond here
        {"Forwarded": "for=203.0.113.9"},
    ],
)
def test_without_a_token_only_requests_addressed_to_this_machine_are_answered(ui_server, headers):
    for path in ("/customers", "/segments/champions/members.csv", "/report"):
        answer = request(ui_server, path, headers=headers)
        assert answer.status == 421, (path, answer.status)
        assert "ui.access_token" in answer.body


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]"])
def test_localhost_by_any_of_its_names_is_answered(ui_server, host):
    port = ui_server.address.rpartition(":")[2]
    assert request(ui_server, "/segments", headers={"Host": f"{host}:{port}"}).status == 200
    assert request(ui_server, "/segments", headers={"Host": host}).status == 200


def test_snapshots_read_in_utc_within_ui_memory_limit_whatever_the_machine(ui_store, monkeypatch):
    # The pages label times "UTC"; DuckDB would otherwise use the machine's local zone.
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        snapshot = AnalystSnapshot(ui_store.analyst, memory_limit="300MB")
        with snapshot.cursor() as cursor:
            [(zone, memory)] = cursor.execute(
                "SELECT current_setting('TimeZone'), current_setting('memory_limit')"
            ).fetchall()
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert zone == "UTC"
    assert memory == "286.1 MiB"  # 300 MB, not DuckDB's 80% of the machine
