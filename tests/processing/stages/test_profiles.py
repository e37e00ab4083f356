from decimal import Decimal

from cdp.processing.stages.run import run_build
from tests.processing.store import AS_OF, days_ago, event, order, settings, store


def _profiles(con, *columns: str) -> dict:
    rows = con.execute(f"SELECT user_id, {', '.join(columns)} FROM customer_profiles").fetchall()
    return {row[0]: row[1:] for row in rows}


def test_journey_stages_follow_the_documented_rules(memory_db):
    store(
        memory_db,
        event("page_viewed", days_ago(3), user_id="aware", properties={"url": "/"}),
        event("product_viewed", days_ago(3), user_id="considering", properties={"product_id": "p"}),
        event(
            "product_added",
            days_ago(3),
            user_id="deciding",
            properties={"product_id": "p", "cart_id": "c"},
        ),
        order("loyal", days_ago(40), "10"),
        order("loyal", days_ago(4), "10"),
        order("lapsed", days_ago(400), "10"),
        order("lapsed", days_ago(300), "10"),
    )
    run_build(memory_db, settings(), AS_OF)
    stages = {user: values[0] for user, values in _profiles(memory_db, "journey_stage").items()}
    assert stages == {
        "aware": "awareness",
        "considering": "consideration",
        "deciding": "decision",
        "loyal": "loyalty",
        "lapsed": "lapsed",
    }


def test_open_cart_is_the_latest_unconverted_cart(memory_db):
    added = {"product_id": "p", "price": "12.50", "quantity": 2, "cart_id": "open"}
    store(
        memory_db,
        event("product_added", days_ago(1), user_id="u", properties=added),
        event(
            "product_added",
            days_ago(1),
            user_id="u",
            properties={**added, "product_id": "q", "quantity": 1},
        ),
        event(
            "product_removed",
            days_ago(1),
            user_id="u",
            properties={**added, "product_id": "q", "quantity": 1},
        ),
        event(
            "product_added", days_ago(9), user_id="buyer", properties={**added, "cart_id": "done"}
        ),
        order("buyer", days_ago(8), "25", cart_id="done"),
    )
    run_build(memory_db, settings(), AS_OF)
    carts = _profiles(memory_db, "open_cart_value", "round(open_cart_age_hours)")
    assert carts["u"] == (Decimal("25.0000"), 24)
    assert carts["buyer"] == (None, None)


def test_top_lists_put_the_most_frequent_first_break_ties_to_the_smaller_value_and_keep_three(
    memory_db,
):
    def viewed(product_id, category, times):
        properties = {"product_id": product_id, "category": category}
        return [
            event("product_viewed", days_ago(2), user_id="u", properties=properties)
            for _ in range(times)
        ]

    def bought(order_id, *lines):
        products = [{"product_id": p, "category": c, "quantity": 1} for p, c in lines]
        properties = {"order_id": order_id, "total": "10.00", "products": products}
        return event("order_completed", days_ago(1), user_id="u", properties=properties)

    store(
        memory_db,
        # Products: d 3, b 2, c 2, a 1. Categories: alpha 3 (b, a), zeta 3, beta 2.
        *viewed("d", "zeta", 3),
        *viewed("b", "alpha", 2),
        *viewed("c", "beta", 2),
        *viewed("a", "alpha", 1),
        # Products: y 2, x 1, z 1. Categories: kitchen 3, media 1.
        bought("o1", ("x", "kitchen"), ("y", "kitchen")),
        bought("o2", ("y", "kitchen"), ("z", "media")),
    )
    run_build(memory_db, settings(), AS_OF)
    tops = _profiles(
        memory_db,
        "top_products_viewed",
        "top_categories_viewed",
        "top_products_bought",
        "top_categories_bought",
    )
    assert tops["u"] == (
        ["d", "b", "c"],
        ["alpha", "zeta", "beta"],
        ["y", "x", "z"],
        ["kitchen", "media"],
    )


def test_consent_and_birthday_come_from_the_latest_identify_traits(memory_db):
    store(
        memory_db,
        event(
            "identify",
            days_ago(10),
            user_id="u",
            traits={"birthday": "1990-04-02", "consent": {"email": True, "sms": True}},
        ),
        event("identify", days_ago(2), user_id="u", traits={"consent": {"email": False}}),
    )
    run_build(memory_db, settings(), AS_OF)
    profile = _profiles(
        memory_db, "consent_email", "consent_sms", "consent_ads", "birthday::VARCHAR"
    )
    assert profile["u"] == (False, True, None, "1990-04-02")


def test_alias_and_group_traits_are_not_the_persons_consent_or_birthday(memory_db):
    store(
        memory_db,
        event(
            "identify",
            days_ago(10),
            user_id="u",
            traits={"birthday": "1990-04-02", "consent": {"email": True}},
        ),
        # A group call's traits are the account's; an alias carries none of the person's.
        event(
            "group",
            days_ago(2),
            user_id="u",
            groupId="acme",
            traits={"birthday": "2001-01-01", "consent": {"email": False, "sms": False}},
        ),
        event(
            "alias",
            days_ago(1),
            user_id="u",
            previousId="a-9",
            traits={"consent": {"email": False, "ads": True}},
        ),
    )
    report = run_build(memory_db, settings(), AS_OF)
    assert report.customers == 1
    profile = _profiles(
        memory_db, "consent_email", "consent_sms", "consent_ads", "birthday::VARCHAR"
    )
    assert profile["u"] == (True, None, None, "1990-04-02")


def test_a_screen_view_counts_as_activity_as_a_page_view_does(memory_db):
    # Segment's screen call (apps) is the page call (web) of another platform: neither
    # is interest in a product, both are activity.
    store(
        memory_db,
        event("page_viewed", days_ago(3), user_id="web", properties={"url": "/"}),
        {
            "messageId": "s-1",
            "type": "screen",
            "name": "Home",
            "userId": "app",
            "timestamp": days_ago(3).isoformat(),
            "properties": {"name": "Home"},
        },
    )
    run_build(memory_db, settings(), AS_OF)
    columns = ("journey_stage", "first_seen_at", "last_seen_at", "top_products_viewed")
    profiles = _profiles(memory_db, *columns)
    assert profiles["app"] == profiles["web"] == ("awareness", days_ago(3), days_ago(3), None)


def test_loyalty_tier_and_funnel_stage_from_config(memory_db):
    store(
        memory_db,
        order("tripwire-only", days_ago(30), "5", products=[{"product_id": "mini", "quantity": 1}]),
        order(
            "core-buyer", days_ago(30), "250", products=[{"product_id": "course", "quantity": 1}]
        ),
        order("returning", days_ago(60), "250", products=[{"product_id": "course", "quantity": 1}]),
        order(
            "returning", days_ago(10), "900", products=[{"product_id": "coaching", "quantity": 1}]
        ),
    )
    config = {
        "funnel": {"tripwire": ["mini"], "core": ["course"], "profit_maximizer": ["coaching"]}
    }
    run_build(memory_db, settings(**config), AS_OF)
    profiles = _profiles(memory_db, "funnel_stage", "loyalty_tier")
    assert profiles == {
        "tripwire-only": ("tripwire", "bronze"),
        "core-buyer": ("core", "silver"),
        "returning": ("return_path", "gold"),
    }


def test_rolling_windows_count_recent_activity_per_configured_window(memory_db):
    store(
        memory_db,
        order("u", days_ago(5), "10"),
        order("u", days_ago(60), "20"),
        order("u", days_ago(200), "30"),
    )
    run_build(memory_db, settings(clv={"rolling_windows_days": [7, 90]}), AS_OF)
    windows = memory_db.execute(
        "SELECT window_days, orders, net_revenue FROM customer_rolling_windows ORDER BY 1"
    ).fetchall()
    assert windows == [(7, 1, Decimal("10")), (90, 2, Decimal("30"))]


def test_orders_are_published_with_their_resolved_customer_refunds_and_line_items(memory_db):
    lines = [
        {"product_id": "mug", "category": "kitchen", "quantity": 2},
        {"product_id": "tea", "category": "pantry", "quantity": 1},
    ]
    store(
        memory_db,
        # Ordered anonymously, then identified: the order is ann's.
        event(
            "order_completed",
            days_ago(9),
            anonymous_id="a-1",
            properties={"order_id": "first", "total": "30.00", "products": lines},
        ),
        event("identify", days_ago(8), anonymous_id="a-1", user_id="ann"),
        order("ann", days_ago(5), "9.20", order_id="euro", currency="EUR"),
        event(
            "order_refunded",
            days_ago(4),
            user_id="ann",
            properties={"order_id": "first", "total": "10.00"},
        ),
        order("ann", days_ago(3), "5.00", order_id="gone"),
        event("order_cancelled", days_ago(2), user_id="ann", properties={"order_id": "gone"}),
    )
    run_build(memory_db, settings(), AS_OF)
    ann = memory_db.execute("SELECT customer_id FROM customer_profiles").fetchall()
    rows = memory_db.execute(
        "SELECT order_id, customer_id, gross, refunded, cancelled, units, product_ids,"
        " categories FROM orders ORDER BY ordered_at"
    ).fetchall()
    assert len(ann) == 1
    assert rows == [
        (
            "first",
            ann[0][0],
            Decimal("30"),
            Decimal("10"),
            False,
            3,
            ["mug", "tea"],
            ["kitchen", "pantry"],
        ),
        ("euro", ann[0][0], Decimal("10"), Decimal("0"), False, 1, None, None),
        ("gone", ann[0][0], Decimal("5"), Decimal("5"), True, 1, None, None),
    ]
