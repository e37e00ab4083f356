import hashlib
import json
from datetime import date

import pytest

from cdp.ingest import generator
from cdp.ingest.events import CANONICAL_TYPES
from cdp.ingest.generator import generate_store


def test_same_seed_gives_the_same_file_byte_for_byte(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    generate_store(a, customers=100, seed=9, end=date(2026, 1, 1))
    generate_store(b, customers=100, seed=9, end=date(2026, 1, 1))
    assert a.read_bytes() == b.read_bytes()


# The synthetic store is a web shop and its back end: no app screens, and the calls
# only SDKs make through the collector (alias, group) are not in its files.
SDK_ONLY_TYPES = {"screen_viewed", "alias", "group"}


def test_store_has_every_web_type_repeat_buyers_currencies_and_two_years(tmp_path):
    path = tmp_path / "s.jsonl"
    report = generate_store(path, customers=1500, seed=1, end=date(2026, 11, 1))
    assert set(report.by_type) == set(CANONICAL_TYPES) - SDK_ONLY_TYPES
    parsed = []
    for line in path.read_bytes().splitlines():
        try:
            parsed.append(json.loads(line))
        except ValueError:
            continue
    orders_per_customer: dict[str, int] = {}
    currencies, stamps, segment_shaped = set(), [], 0
    for body in parsed:
        stamps.append(body.get("timestamp") or "")
        segment_shaped += body.get("type") == "track"
        if body.get("type") == "order_completed" or body.get("event") == "Order Completed":
            customer = body.get("user_id") or body.get("userId")
            orders_per_customer[customer] = orders_per_customer.get(customer, 0) + 1
            currencies.add(body["properties"]["currency"])
    repeaters = sum(1 for n in orders_per_customer.values() if n > 1)
    assert 0.1 < repeaters / len(orders_per_customer) < 0.9
    assert max(orders_per_customer.values()) >= 8  # a long tail of loyal buyers
    assert {"USD", "EUR", "GBP", "VND"} <= currencies
    assert 0.1 < segment_shaped / len(parsed) < 0.3
    dated = sorted(s[:10] for s in stamps if s[:4].isdigit())
    assert dated[0] < "2025-01-01" and dated[-1] > "2026-09-01"
    assert 0 < report.malformed < 0.01 * report.events


def test_many_seeds_generate_without_error(tmp_path):
    # Extreme draws (a purchase rate near zero) once overflowed the date range.
    for seed in range(8):
        report = generate_store(
            tmp_path / f"{seed}.jsonl", customers=3000, seed=seed, end=date(2026, 11, 1)
        )
        assert report.events > 0


def test_buyer_share_and_return_visits_set_the_events_per_customer(tmp_path):
    default = generate_store(tmp_path / "a.jsonl", customers=3000, seed=2, end=date(2026, 11, 1))
    lean = generate_store(
        tmp_path / "b.jsonl",
        customers=3000,
        seed=2,
        end=date(2026, 11, 1),
        buyer_share=0.19,
        return_visits=1,
    )
    assert 16 < default.events / default.customers < 20
    assert 9 < lean.events / lean.customers < 11.5  # the profile benchmark's 1M / 10M shape
    assert lean.by_type["order_completed"] < default.by_type["order_completed"] / 2


def test_nobody_buys_when_the_buyer_share_is_zero(tmp_path):
    report = generate_store(
        tmp_path / "s.jsonl", customers=500, seed=3, end=date(2026, 11, 1), buyer_share=0.0
    )
    assert "order_completed" not in report.by_type
    assert report.by_type["page_viewed"] >= 500


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("buyer_share", 1.2, "buyer_share must be between 0 and 1, got 1.2"),
        ("return_visits", -1, "return_visits must be 0 or more, got -1"),
    ],
)
def test_shape_options_out_of_range_are_refused_by_name(tmp_path, option, value, message):
    with pytest.raises(ValueError, match=message):
        generate_store(tmp_path / "s.jsonl", customers=10, **{option: value})


# sha256 of stores written by the generator before issue 17 rewrote it for speed (832715a:
# an event dict per event, json.dumps, datetime arithmetic, random.randint/choice/sample),
# with (events, malformed, re-sent). The first holds every kind of malformed line; the
# last has nobody buy and nobody come back (randint(0, 0) still draws).
BEFORE_ISSUE_17 = [
    (
        dict(customers=2000, seed=42),
        "9cc05d4cf86c35ae1c20d3335b63df5edbf6340e8568ee618d339fb9c3845acf",
        (35948, 147, 62),
    ),
    (
        dict(customers=2000, seed=7, buyer_share=0.19, return_visits=1),
        "0d0564956a64603cbd6312242c777cc98fc03e924c4409e127878bd9879f4a80",
        (20856, 63, 45),
    ),
    (
        dict(customers=500, seed=3, buyer_share=0.0, return_visits=0),
        "469fd0e78e2efa8983cbcc30b141b24adf90c57d3965b94c030f0c3a269a8ba8",
        (2107, 3, 1),
    ),
]


@pytest.mark.parametrize(("options", "digest", "counts"), BEFORE_ISSUE_17)
@pytest.mark.parametrize("flush_lines", [None, 97])
def test_the_store_is_byte_for_byte_the_one_written_before_the_speed_up(
    tmp_path, monkeypatch, options, digest, counts, flush_lines
):
    if flush_lines:  # many small writes, some just before a non-UTF-8 line
        monkeypatch.setattr(generator, "_FLUSH_LINES", flush_lines)
    path = tmp_path / "s.jsonl"
    report = generate_store(path, end=date(2026, 1, 1), **options)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert (report.events, report.malformed, report.resent) == counts
    assert sum(report.by_type.values()) == report.events
