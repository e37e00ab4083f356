from cdp.processing.stages.run import run_build
from tests.processing.store import AS_OF, days_ago, order, settings, store

THIRDS = {"rfm": {"scores": 3, "recency_scoring": "window", "window_days": 365}}


def _scores(con):
    return dict(
        con.execute(
            "SELECT user_id, (rfm_recency_score, rfm_frequency_score, rfm_monetary_score,"
            " rfm_segment) FROM customer_profiles"
        ).fetchall()
    )


def test_source_material_recency_thirds_of_a_year(memory_db):
    store(
        memory_db,
        order("recent", days_ago(60), "10"),
        order("middle", days_ago(180), "10"),
        order("old", days_ago(300), "10"),
    )
    run_build(memory_db, settings(**THIRDS), AS_OF)
    recency = {user: scores[0] for user, scores in _scores(memory_db).items()}
    assert recency == {"recent": 3, "middle": 2, "old": 1}


def test_equal_values_get_equal_scores(memory_db):
    store(
        memory_db,
        *(order(f"twin{n}", days_ago(30), "50") for n in range(3)),
        order("big", days_ago(5), "500"),
    )
    run_build(memory_db, settings(), AS_OF)
    scores = _scores(memory_db)
    assert scores["twin0"] == scores["twin1"] == scores["twin2"]
    assert scores["big"][0] > scores["twin0"][0] and scores["big"][2] > scores["twin0"][2]


def test_a_single_buyer_is_scored_and_segmented(memory_db):
    store(memory_db, order("only", days_ago(3), "10"))
    run_build(memory_db, settings(), AS_OF)
    assert _scores(memory_db)["only"] == (1, 1, 1, "Lost")


def test_frequent_recent_buyers_are_champions_and_long_gone_ones_are_not(memory_db):
    bodies = [order(f"fan{n}", days_ago(2 + k * 20 + n), "40") for n in range(5) for k in range(8)]
    bodies += [order(f"gone{n}", days_ago(340 + n), "40") for n in range(20)]
    store(memory_db, *bodies)
    run_build(memory_db, settings(), AS_OF)
    scores = _scores(memory_db)
    assert {scores[f"fan{n}"][3] for n in range(5)} == {"Champions"}
    # Quantiles rank buyers against each other: the oldest fifth of them are Lost.
    assert {scores[f"gone{n}"][3] for n in range(15, 20)} == {"Lost"}
    assert not {scores[f"gone{n}"][3] for n in range(20)} & {"Champions", "Loyal"}
    summary = memory_db.execute("SELECT rfm_segment, customers FROM rfm_segment_summary").fetchall()
    assert sum(count for _, count in summary) == 25


def test_recent_first_time_buyer_is_new_and_a_buyer_outside_the_window_is_lost(memory_db):
    bodies = [
        order(f"regular{n}", days_ago(30 + 50 * k + n), "40") for n in range(8) for k in range(4)
    ]
    bodies += [order("newcomer", days_ago(1), "40"), order("long-ago", days_ago(500), "40")]
    store(memory_db, *bodies)
    run_build(memory_db, settings(), AS_OF)
    scores = _scores(memory_db)
    assert scores["newcomer"][3] == "New"
    assert scores["long-ago"] == (1, 1, 1, "Lost")
