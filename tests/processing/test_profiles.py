from decimal import Decimal

from cdp.processing.build import run_build
from tests.processing.store import AS_OF, days_ago, event, order, settings, store


def _profiles(con, *columns: str) -> dict:
    rows = con.execute(f"SELECT user_id, {', '.join(columns)} FROM customer_profiles").fetchall()
    return {row[0]: row[1:] for row in rows}


def test_journey_stages_follow_the_documented_rules(memory_db):
    store(
        memory_db,
        event("page_viewed", days_ago(3), user_id="aware", properties={"url": "/"}),
        event("product_viewed", days_ago(3), user_id="considering", properties={"product_id": "p"}),
        event("product_added", days_ago(3), user_id="deciding", properties={"product_id": "p", "cart_id": "c"}),  # noqa: E501
        order("loyal", days_ago(40), "10"), order("loyal", days_ago(4), "10"),
        order("lapsed", days_ago(400), "10"), order("lapsed", days_ago(300), "10"),
    )  # fmt: skip
    run_build(memory_db, settings(), AS_OF)
    stages = {user: values[0] for user, values in _profiles(memory_db, "journey_stage").items()}
    assert stages == {
        "aware": "awareness", "considering": "consideration", "deciding": "decision",
        "loyal": "loyalty", "lapsed": "lapsed",
    }  # fmt: skip


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
