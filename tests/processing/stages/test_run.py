from cdp.processing.stages.run import run_build
from tests.processing.store import AS_OF, days_ago, event, order, settings, store


def test_a_copy_stored_after_its_event_left_the_duplicate_window_is_counted_once(memory_db):
    viewed = event("product_viewed", days_ago(20), user_id="ann", properties={"product_id": "p"})
    store(memory_db, viewed, order("ann", days_ago(19), "10"))
    store(memory_db, event("page_viewed", days_ago(0), user_id="bob"))  # the window moves on
    store(memory_db, viewed)  # 20 days older than the newest event: outside the window
    assert memory_db.execute(
        "SELECT count(*) FROM events WHERE event_id = $id", {"id": viewed["event_id"]}
    ).fetchall() == [(2,)]

    run_build(memory_db, settings(), AS_OF)

    views = memory_db.execute(
        "SELECT max(product_views) FROM customer_rolling_windows JOIN customer_profiles"
        " USING (customer_id) WHERE user_id = 'ann'"
    ).fetchall()
    assert views == [(1,)]
    [(message,)] = memory_db.execute("SELECT message FROM builds").fetchall()
    assert "1 late copies of stored events counted once" in message
