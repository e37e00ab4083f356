import itertools

import pytest

from cdp.processing.stages.identity import resolve_customer_id
from cdp.processing.stages.run import run_build
from tests.processing.store import AS_OF, days_ago, event, order, settings, store


def _customer_of(con, identifier: str) -> str:
    return con.execute(
        "SELECT customer_id FROM customer_identities WHERE identifier = $i", {"i": identifier}
    ).fetchall()[0][0]


LINKS = [
    {"anonymous_id": "A", "user_id": "B"},
    {"user_id": "B", "traits": {"email": "c@x.io"}},
    {"anonymous_id": "D", "traits": {"email": " C@X.io "}},
]


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_a_chain_of_links_arriving_in_any_order_ends_as_one_customer(memory_db, order):
    for step, index in enumerate(order):
        link = LINKS[index]
        kind = "identify" if "traits" in link else "page_viewed"
        store(memory_db, event(kind, days_ago(10 - step), **link))
        run_build(memory_db, settings(), AS_OF)
    survivors = {_customer_of(memory_db, i) for i in ("anon:A", "user:B", "email:c@x.io", "anon:D")}
    assert len(survivors) == 1
    [survivor] = survivors
    # Every id handed out on the way still resolves to the survivor.
    aliases = memory_db.execute("SELECT alias_id FROM customer_aliases").fetchall()
    assert all(resolve_customer_id(memory_db, alias) == survivor for (alias,) in aliases)
    assert memory_db.execute("SELECT count(*) FROM customer_profiles").fetchall()[0][0] == 1


def test_ids_are_stable_across_rebuilds(memory_db):
    store(memory_db, event("page_viewed", days_ago(5), anonymous_id="A"))
    store(memory_db, event("page_viewed", days_ago(4), anonymous_id="Z", user_id="u"))
    run_build(memory_db, settings(), AS_OF)
    first = memory_db.execute("SELECT customer_id FROM customer_profiles ORDER BY 1").fetchall()
    run_build(memory_db, settings(), AS_OF)
    again = memory_db.execute("SELECT customer_id FROM customer_profiles ORDER BY 1").fetchall()
    assert first == again and len(first) == 2


def test_merge_keeps_the_customer_seen_first_and_every_event(memory_db):
    store(
        memory_db,
        event(
            "product_viewed",
            days_ago(30),
            anonymous_id="early",
            properties={"product_id": "p1", "category": "cakes"},
        ),
    )
    store(
        memory_db,
        event(
            "product_viewed",
            days_ago(20),
            user_id="late",
            properties={"product_id": "p2", "category": "tea"},
        ),
    )
    run_build(memory_db, settings(), AS_OF)
    early = _customer_of(memory_db, "anon:early")
    late = _customer_of(memory_db, "user:late")
    assert early != late
    store(memory_db, event("identify", days_ago(1), anonymous_id="early", user_id="late"))
    run_build(memory_db, settings(), AS_OF)
    assert _customer_of(memory_db, "user:late") == early
    assert resolve_customer_id(memory_db, late) == early
    viewed = memory_db.execute(
        "SELECT top_categories_viewed, anonymous_ids, user_id FROM customer_profiles"
    ).fetchall()
    assert viewed == [(["cakes", "tea"], ["early"], "late")]


def test_anonymous_browsing_before_sign_up_is_attributed_to_the_customer(memory_db):
    store(
        memory_db,
        event(
            "product_viewed",
            days_ago(9),
            anonymous_id="a1",
            properties={"product_id": "p", "category": "cakes"},
        ),
        event(
            "identify",
            days_ago(2),
            anonymous_id="a1",
            user_id="u1",
            traits={"phone": "+1 (555) 010-0200"},
        ),
    )
    run_build(memory_db, settings(), AS_OF)
    profile = memory_db.execute(
        "SELECT user_id, top_categories_viewed, phones, first_seen_at FROM customer_profiles"
    ).fetchall()
    assert profile == [("u1", ["cakes"], ["+15550100200"], days_ago(9))]


def test_contact_details_in_order_properties_stitch_a_guest_checkout_to_its_customer(
    memory_db,
):
    store(
        memory_db,
        event("identify", days_ago(20), user_id="u7", traits={"email": "Pat@Example.com"}),
        # A guest checkout on another device: only the order's properties name Pat.
        order(
            None,
            days_ago(3),
            "40.00",
            order_id="guest-1",
            email=" pat@example.com ",
            phone="+44 20 7946 0000",
            products=[{"product_id": "p9", "quantity": 2}],
        )
        | {"anonymous_id": "guest-device"},
    )
    run_build(memory_db, settings(), AS_OF)
    rows = memory_db.execute(
        "SELECT user_id, anonymous_ids, emails, phones, orders, units FROM customer_profiles"
    ).fetchall()
    assert rows == [("u7", ["guest-device"], ["pat@example.com"], ["+442079460000"], 1, 2)]


def test_a_synthetic_store_resolves_to_exactly_its_customers(memory_db, tmp_path):
    # Guards against false merges: the generator once reused phone numbers, and
    # identity resolution (rightly) merged everyone sharing one.
    from cdp.ingest.generator import generate_store
    from cdp.ingest.loader import load_file
    from cdp.ingest.validation import ValidationLimits

    source = tmp_path / "store.jsonl"
    generate_store(source, customers=10_500, seed=8, end=AS_OF.date())  # > 10,000: see above
    load_file(memory_db, source, limits=ValidationLimits())
    report = run_build(memory_db, settings(), AS_OF)
    assert report.customers == 10_500
    assert report.identity.merges == 0


def test_a_long_chain_needs_several_rounds_and_still_ends_as_one_customer(memory_db):
    # u00 – e01 – u01 – e02 – … – u12: each identify links a user to the next email,
    # so no single event, and no first round, sees more than a link of the chain.
    for i in range(12):
        email = f"e{i + 1:02d}@x.io"
        store(
            memory_db, event("identify", days_ago(3), user_id=f"u{i:02d}", traits={"email": email})
        )
        store(
            memory_db,
            event("identify", days_ago(2), user_id=f"u{i + 1:02d}", traits={"email": email}),
        )
    report = run_build(memory_db, settings(), AS_OF)
    assert report.identity.rounds >= 3
    assert report.customers == 1
    assert report.identity.identifiers == 13 + 12


def _identifiers(con) -> dict[str, str]:
    return dict(con.execute("SELECT identifier, customer_id FROM customer_identities").fetchall())


def _visitor_and_buyer_on_two_devices(con, visitor: dict) -> None:
    """Someone browses and fills a cart as ``visitor``; a signed-in u-42 orders on a
    phone. No event carries ids of both, so they are two customers until an alias."""
    store(
        con,
        event(
            "product_viewed",
            days_ago(9),
            **visitor,
            properties={"product_id": "p1", "category": "cakes"},
        ),
        event(
            "product_added",
            days_ago(9),
            **visitor,
            properties={"product_id": "p1", "cart_id": "c1", "price": "12.50", "quantity": 1},
        ),
        order("u-42", days_ago(3), "12.50", products=[{"product_id": "p1", "quantity": 1}])
        | {"anonymous_id": "phone-9"},
    )
    assert run_build(con, settings(), AS_OF).customers == 2


def test_an_alias_of_the_anonymous_id_merges_the_visitor_with_the_user_who_ordered_elsewhere(
    memory_db,
):
    _visitor_and_buyer_on_two_devices(memory_db, {"anonymous_id": "anon-7f3c"})
    visitor = _customer_of(memory_db, "anon:anon-7f3c")
    # Segment's alias as a server library sends it: previousId and userId only.
    store(memory_db, event("alias", days_ago(1), previousId="anon-7f3c", userId="u-42"))
    report = run_build(memory_db, settings(), AS_OF)
    assert report.customers == 1
    assert set(_identifiers(memory_db).values()) == {visitor}  # the one first seen survives
    profile = memory_db.execute(
        "SELECT user_id, anonymous_ids, orders, top_products_viewed, journey_stage"
        " FROM customer_profiles"
    ).fetchall()
    assert profile == [("u-42", ["anon-7f3c", "phone-9"], 1, ["p1"], "decision")]
    # previousId named an anonymous id: it is not also taken for a user id.
    assert "user:anon-7f3c" not in _identifiers(memory_db)


@pytest.mark.parametrize("spelling", ["previousId", "previous_id"])
def test_an_alias_of_an_earlier_user_id_merges_the_two_users(memory_db, spelling):
    _visitor_and_buyer_on_two_devices(memory_db, {"user_id": "shop-1001"})
    # Validation strips identifiers; the payload keeps them as sent.
    store(memory_db, event("alias", days_ago(1), user_id="u-42", **{spelling: " shop-1001\t"}))
    report = run_build(memory_db, settings(), AS_OF)
    assert report.customers == 1
    assert _identifiers(memory_db).keys() == {"user:shop-1001", "user:u-42", "anon:phone-9"}
    profile = memory_db.execute(
        "SELECT anonymous_ids, orders, top_products_viewed FROM customer_profiles"
    ).fetchall()
    assert profile == [(["phone-9"], 1, ["p1"])]


def test_an_alias_of_an_id_no_event_carries_adds_no_identifier(memory_db):
    store(
        memory_db,
        event("page_viewed", days_ago(2), user_id="u-42", properties={"url": "/"}),
        event("alias", days_ago(1), previousId="never-seen", userId="u-42"),
    )
    report = run_build(memory_db, settings(), AS_OF)
    assert report.customers == 1
    assert _identifiers(memory_db).keys() == {"user:u-42"}


@pytest.mark.parametrize(
    ("forgotten", "alias"),
    [
        ("user:ann", {"previousId": "b-2", "userId": "ann"}),
        ("anon:a-1", {"previousId": "a-1", "userId": "carl"}),
    ],
)
def test_an_alias_naming_a_forgotten_identifier_links_nothing(memory_db, forgotten, alias):
    memory_db.execute(
        "INSERT INTO suppressed_identifiers VALUES (sha256($i), $at, 'cdp forget')",
        {"i": forgotten, "at": days_ago(30)},
    )
    store(
        memory_db,
        event("page_viewed", days_ago(3), anonymous_id="b-2", properties={"url": "/"}),
        event("page_viewed", days_ago(3), anonymous_id="a-1", properties={"url": "/"}),
        event("page_viewed", days_ago(3), user_id="carl", properties={"url": "/"}),
        event("alias", days_ago(1), **alias),
    )
    run_build(memory_db, settings(), AS_OF)
    identifiers = _identifiers(memory_db)
    assert forgotten not in identifiers
    # Whatever the alias named besides the forgotten identifier stays a customer of its own.
    assert len(set(identifiers.values())) == len(identifiers)


def test_a_group_calls_account_traits_do_not_merge_the_accounts_members(memory_db):
    # Segment's group call: traits are the account's (Acme's billing address), not the user's.
    account = {"email": "billing@acme.example", "phone": "+1 555 010 9999", "name": "Acme"}
    store(
        memory_db,
        event("identify", days_ago(5), user_id="u1", traits={"email": "ann@acme.example"}),
        event("identify", days_ago(5), user_id="u2", traits={"email": "bob@acme.example"}),
        event("group", days_ago(4), user_id="u1", groupId="acme", traits=account),
        event("group", days_ago(4), user_id="u2", groupId="acme", traits=account),
    )
    report = run_build(memory_db, settings(), AS_OF)
    assert report.customers == 2
    profiles = memory_db.execute(
        "SELECT user_id, emails, phones FROM customer_profiles ORDER BY user_id"
    ).fetchall()
    assert profiles == [("u1", ["ann@acme.example"], None), ("u2", ["bob@acme.example"], None)]
