import duckdb
import pytest

from cdp.processing.segmentation.rules import RuleError, compile_rule

CATALOG = {
    "customer_id": "VARCHAR",
    "orders": "BIGINT",
    "net_revenue": "DECIMAL(18,4)",
    "rfm_segment": "VARCHAR",
    "last_order_at": "TIMESTAMP WITH TIME ZONE",
    "birthday": "DATE",
    "consent_email": "BOOLEAN",
    "top_categories_bought": "VARCHAR[]",
}


@pytest.fixture
def source():
    con = duckdb.connect()
    con.execute(
        """CREATE TEMP TABLE segment_source AS SELECT * FROM (VALUES
        ('a', 5, 500.0, 'Champions', TIMESTAMPTZ '2026-06-29 10:00+00', DATE '1990-07-03', true,
         ['shoes', 'bags']),
        ('b', 1, 20.0, 'New', TIMESTAMPTZ '2026-05-01 10:00+00', NULL, false, ['bags']),
        ('c', 2, 100.0, 'Can''t lose them', NULL, DATE '1985-12-01', NULL, NULL),
        ('d', 3, 100.0, 'Loyal', TIMESTAMPTZ '2026-06-20 10:00+00', NULL, true, ['hats'])
        ) t(customer_id, orders, net_revenue, rfm_segment, last_order_at, birthday,
            consent_email, top_categories_bought)"""
    )
    yield con
    con.close()


def members(con, rule: str) -> set[str]:
    compiled = compile_rule(rule, CATALOG)
    params = dict(compiled.params)
    if "$as_of" in compiled.sql:
        params["as_of"] = "2026-06-30 23:59:59+00"
    rows = con.execute(
        f"SELECT customer_id FROM segment_source WHERE {compiled.sql}", params
    ).fetchall()
    return {row[0] for row in rows}


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("orders >= 3", {"a", "d"}),
        ("orders >= 3 and not rfm_segment = 'Loyal'", {"a"}),
        ("orders = 1 or net_revenue > 400", {"a", "b"}),
        ("rfm_segment in ('New', \"Can't lose them\")", {"b", "c"}),
        ("rfm_segment not in ('New')", {"a", "c", "d"}),
        ("orders between 2 and 3", {"c", "d"}),
        ("last_order_at is null", {"c"}),
        ("last_order_at within 30 days", {"a", "d"}),
        ("last_order_at within 2 days", {"a"}),
        ("birthday is not null and consent_email", {"a"}),
        ("consent_email = false", {"b"}),
        ("top_categories_bought contains 'bags'", {"a", "b"}),
        ("net_revenue in top 25%", {"a"}),
        ("net_revenue in bottom 25%", {"b"}),
        ("(orders > 1) AND (rfm_segment = 'Loyal' OR rfm_segment = 'Champions')", {"a", "d"}),
        ("last_order_at > '2026-06-01'", {"a", "d"}),
        ("orders > net_revenue", set()),
    ],
)
def test_rules_select_the_customers_they_describe(source, rule, expected):
    assert members(source, rule) == expected


def test_ties_at_the_percentile_boundary_are_left_out(source):
    # c and d tie at 100: both would make the top 75% of four only with b excluded;
    # "top 50%" cannot include one of the tied pair without the other, so neither.
    assert members(source, "net_revenue in top 50%") == {"a"}
    assert members(source, "net_revenue in top 75%") == {"a", "c", "d"}


def test_a_missing_value_never_matches_even_negated(source):
    assert "c" not in members(source, "not last_order_at within 30 days")


def test_literals_become_parameters_never_sql_text():
    compiled = compile_rule("rfm_segment = 'x''); DROP TABLE events; --'", CATALOG)
    assert "DROP" not in compiled.sql
    assert compiled.params == {"p0": "x'); DROP TABLE events; --"}


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("ordrs > 2", "unknown column 'ordrs', found 'ordrs' at position 1"),
        ("orders > 'many'", "type mismatch: 'orders' needs a number, found \"'many'\""),
        ("rfm_segment > 3", "type mismatch: 'rfm_segment' needs a quoted text"),
        ("orders ~ 2", "unexpected character '~' at position 8"),
        ("orders > 2 and", "expected a column name, found 'end of rule'"),
        ("orders 2", "expected an operator after column 'orders'"),
        ("rfm_segment within 3 days", "'within' needs a date or time column"),
        ("orders in top 0%", "the percentage must be above 0"),
        ("orders in top 10", "expected '%' after the percentage"),
        ("last_order_at within 3 months", "expected 'hours', 'days' or 'weeks'"),
        ("orders contains 'x'", "'contains' needs a list column"),
        ("consent_email > true", "a boolean column cannot be compared with '>'"),
        ("top_categories_bought = 'x'", "a list column can only be used with 'contains'"),
        ("(orders > 1", "expected ')'"),
        ("birthday > 'June'", "expected a date as 'YYYY-MM-DD'"),
        ("orders > net_revenue or orders > rfm_segment", "cannot compare a number with"),
        ("", "the rule is empty"),
    ],
)
def test_bad_rules_name_the_offending_token(rule, message):
    with pytest.raises(RuleError) as caught:
        compile_rule(rule, CATALOG)
    assert message in str(caught.value)
