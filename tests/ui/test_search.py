"""Finding customers by every identifier kind, normalized as identity resolution does."""

from __future__ import annotations

from urllib.parse import quote

import duckdb
import pytest

from tests.ui.conftest import request


def _ann_id(ui_store) -> str:
    with duckdb.connect(str(ui_store.analyst), read_only=True) as con:
        return con.execute(
            "SELECT customer_id FROM customer_identities WHERE identifier = 'user:ann-42'"
        ).fetchall()[0][0]


@pytest.mark.parametrize(
    "query",
    [
        "ann.smith@example.com",
        "  ANN.Smith@Example.com ",  # trimmed and lower-cased, as the build stores emails
        "email:Ann.Smith@example.com",
        "+44 20 7946 0018",  # phones by their digits (and the leading +)
        "+442079460018",
        "ann-42",  # user id
        "user:ann-42",
        "anon-ann",  # anonymous id
    ],
)
def test_a_single_exact_match_redirects_to_the_customer(ui_server, ui_store, query):
    answer = request(ui_server, "/customers?q=" + quote(query))
    assert answer.status == 303, answer.body[:500]
    assert answer.headers["location"] == f"/customers/{_ann_id(ui_store)}"


def test_the_customer_id_itself_redirects(ui_server, ui_store):
    ann = _ann_id(ui_store)
    assert request(ui_server, f"/customers?q={ann}").headers["location"] == f"/customers/{ann}"


def test_email_prefix_lists_the_matching_customers(ui_server):
    answer = request(ui_server, "/customers?q=Customer.1")
    assert answer.status == 200
    assert "Emails starting with" in answer.body
    listed = answer.body.count("customer.1")
    assert listed >= 10  # customer.1, customer.10..19, customer.100...
    assert "customer.2@" not in answer.body


def test_no_match_says_so(ui_server):
    answer = request(ui_server, "/customers?q=nobody-here@nowhere.test")
    assert answer.status == 200
    assert "No customer matches" in answer.body


@pytest.mark.parametrize(
    "query",
    [
        "'; DROP TABLE customer_profiles; --",
        "%",
        "_",
        "\\",
        '" OR 1=1 --',
        "email:%25",
        "😀" * 50,
        "a\u0000b",
    ],
)
def test_hostile_queries_are_just_text(ui_server, query):
    answer = request(ui_server, "/customers?q=" + quote(query))
    assert answer.status == 200
    assert "No customer matches" in answer.body


def test_a_huge_query_is_a_clean_400(ui_server):
    answer = request(ui_server, "/customers?q=" + "a" * 100_000)
    assert answer.status in (400, 414)
