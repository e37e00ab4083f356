from datetime import timedelta

import pytest

from cdp.processing.segmentation.config import load_segment_config
from cdp.processing.stages.run import run_build
from tests.processing.store import AS_OF, days_ago, event, order, settings, store

SEGMENTS = """
[[segments]]
name = "recent"
rule = "last_order_at within 30 days"
consent = "none"
traits = ["orders", "recommended_products"]

[[segments]]
name = "repeat"
rule = "orders >= 2"
consent = "none"
"""


def _members(con, segment: str) -> set[str]:
    rows = con.execute(
        "SELECT p.user_id FROM segment_membership m JOIN customer_profiles p USING (customer_id) "
        "WHERE segment = $s",
        {"s": segment},
    ).fetchall()
    return {row[0] for row in rows}


def _build(con, as_of):
    return run_build(con, settings(), as_of, load_segment_config(settings(), SEGMENTS))


def test_membership_history_records_entries_exits_and_re_entries(memory_db):
    t1, t2, t3, t4 = (
        AS_OF,
        AS_OF + timedelta(days=20),
        AS_OF + timedelta(days=45),
        AS_OF + timedelta(days=60),
    )
    store(
        memory_db,
        order("ann", days_ago(5), "10"),  # recent at t1, t2; gone by t3
        order("bob", AS_OF + timedelta(days=10), "10"),  # enters at t2
        order("ann", AS_OF + timedelta(days=50), "10"),  # ann re-enters at t4
    )
    _build(memory_db, t1)
    assert _members(memory_db, "recent") == {"ann"}
    _build(memory_db, t2)
    assert _members(memory_db, "recent") == {"ann", "bob"}
    _build(memory_db, t3)
    assert _members(memory_db, "recent") == set()
    _build(memory_db, t4)
    assert _members(memory_db, "recent") == {"ann"}

    stays = memory_db.execute(
        "SELECT p.user_id, h.entered_at, h.exited_at FROM segment_membership_history h "
        "JOIN customer_identities i ON i.customer_id = h.customer_id AND starts_with(i.identifier, 'user:') "  # noqa: E501
        "JOIN customer_profiles p ON p.customer_id = h.customer_id "
        "WHERE segment = 'recent' ORDER BY 1, 2"
    ).fetchall()
    assert [(user, entered, exited) for user, entered, exited in stays] == [
        ("ann", t1, t3),
        ("ann", t4, None),
        ("bob", t2, t3),
    ]
    sizes = memory_db.execute(
        "SELECT as_of, members, entered, exited FROM segment_sizes WHERE segment = 'recent' "
        "ORDER BY as_of"
    ).fetchall()
    assert [row[1:] for row in sizes] == [(1, 1, 0), (2, 1, 0), (0, 0, 2), (1, 1, 0)]
    entered_at = memory_db.execute(
        "SELECT entered_at FROM segment_membership WHERE segment = 'recent'"
    ).fetchall()
    assert entered_at == [(t4,)]


def test_rebuilding_the_same_as_of_replaces_rather_than_duplicates(memory_db):
    store(memory_db, order("ann", days_ago(5), "10"), order("ann", days_ago(3), "10"))
    _build(memory_db, AS_OF)
    _build(memory_db, AS_OF)
    counts = memory_db.execute(
        "SELECT segment, count(*) FROM segment_membership_history GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert counts == [("recent", 1), ("repeat", 1)]
    assert memory_db.execute("SELECT count(*) FROM segment_sizes").fetchall() == [(2,)]


def test_traits_are_stored_with_each_membership(memory_db):
    store(memory_db, order("ann", days_ago(5), "10"))
    _build(memory_db, AS_OF)
    traits = memory_db.execute(
        "SELECT traits->>'$.orders' FROM segment_membership WHERE segment = 'recent'"
    ).fetchall()
    assert traits == [("1",)]


def test_cross_sell_recommends_what_others_bought_with_the_same_products(memory_db):
    def basket(user, *products):
        return order(
            user,
            days_ago(10),
            "30",
            products=[{"product_id": p, "price": "10", "quantity": 1} for p in products],
        )

    store(
        memory_db,
        basket("a", "cake", "candles"),
        basket("b", "cake", "candles"),
        basket("c", "cake", "candles", "card"),
        basket("d", "cake", "card"),
        basket("e", "cake"),
    )
    _build(memory_db, AS_OF)
    pairs = memory_db.execute(
        "SELECT orders_together, confidence FROM product_affinity "
        "WHERE product_id = 'cake' AND other_product_id = 'candles'"
    ).fetchall()
    assert pairs == [(3, 3 / 5)]
    recommended = memory_db.execute(
        "SELECT p.user_id, r.recommended_products FROM customer_recommendations r "
        "JOIN customer_profiles p USING (customer_id) ORDER BY 1"
    ).fetchall()
    # e bought only cake: candles (3 of 5 cake orders) ahead of card (2 of 5).
    assert dict(recommended)["e"] == ["candles", "card"]
    assert dict(recommended)["a"] == ["card"]
    assert "c" not in dict(recommended)  # already bought everything paired


def test_segment_traits_count_members_and_compare_them_with_the_whole_store(memory_db):
    def bought(user, days, product, category):
        return order(
            user,
            days_ago(days),
            "10",
            products=[{"product_id": product, "category": category, "price": "10", "quantity": 1}],
        )

    store(
        memory_db,
        bought("ann", 5, "cake", "bakery"),
        bought("ann", 40, "candles", "party"),
        bought("bob", 3, "bread", "bakery"),
        bought("cid", 100, "balloons", "party"),
    )
    _build(memory_db, AS_OF)
    rows = memory_db.execute(
        "SELECT value, members, share, store_share, lift FROM segment_traits "
        "WHERE segment = 'recent' AND trait = 'top_categories_bought' ORDER BY value"
    ).fetchall()
    # recent = ann and bob; the store = ann, bob and cid.
    assert rows == [
        ("bakery", 2, 1.0, pytest.approx(2 / 3), pytest.approx(1.5)),
        ("party", 1, 0.5, pytest.approx(2 / 3), pytest.approx(0.75)),
    ]


def test_consent_is_the_latest_stated_per_channel_with_its_time(memory_db):
    store(
        memory_db,
        event(
            "identify",
            days_ago(30),
            user_id="ann",
            traits={"consent": {"email": True, "sms": True}},
        ),
        event("identify", days_ago(2), user_id="ann", traits={"consent": {"email": False}}),
    )
    _build(memory_db, AS_OF)
    consent = memory_db.execute(
        "SELECT channel, granted, stated_at FROM customer_consent ORDER BY 1"
    ).fetchall()
    assert consent == [("email", False, days_ago(2)), ("sms", True, days_ago(30))]
