"""Every query in docs/queries.md runs against a freshly built analyst database."""

import re
from pathlib import Path

import duckdb
import pytest

from cdp.storage.paths import analyst_path

QUERIES = re.findall(
    r"```sql\n(.*?)```", (Path(__file__).parents[1] / "docs" / "queries.md").read_text(), re.S
)


def test_the_queries_doc_has_the_worked_queries_the_issue_lists():
    text = (Path(__file__).parents[1] / "docs" / "queries.md").read_text().lower()
    for topic in (
        "cohort retention",
        "clv by acquisition month and channel",
        "rfm grid",
        "funnel",
        "segment movements this week",
        "cross-sell pairs",
    ):
        assert topic in text, topic
    assert len(QUERIES) >= 7


@pytest.mark.parametrize("query", QUERIES, ids=[q.split("\n")[0][:40] for q in QUERIES])
def test_each_documented_query_runs_and_returns_rows(published_store, query):
    with duckdb.connect(str(analyst_path(published_store)), read_only=True) as con:
        rows = con.execute(query).fetchall()
    assert rows, "the query returned nothing on a generated store"
