"""Stages' profile columns are joined into one rewrite of build_profiles: no two may
make the same column, or one stage's values would silently be lost."""

import pytest

from cdp.processing.stages.clv import FORMULA_CLV_COLUMNS, PREDICTED_CLV_COLUMNS
from cdp.processing.stages.profiles import (
    ProfileColumns,
    check_distinct_columns,
    set_profile_columns,
)
from cdp.processing.stages.rfm import RFM_COLUMNS
from cdp.processing.stages.segment_source import segment_source_columns
from tests.processing.store import AS_OF, settings


@pytest.fixture
def profiles(memory_db):
    memory_db.execute("CREATE TEMP TABLE build_profiles AS SELECT * FROM customer_profiles")
    return memory_db


def _columns(con) -> list[str]:
    return [row[0] for row in con.execute("DESCRIBE build_profiles").fetchall()]


def test_two_stages_making_the_same_column_is_an_error_naming_both(profiles):
    before = _columns(profiles)
    other = ProfileColumns(additions="p.orders AS RFM_Segment", name="tests.other_stage")
    with pytest.raises(ValueError) as raised:
        set_profile_columns(profiles, RFM_COLUMNS, other, params={"as_of": AS_OF})
    message = str(raised.value)
    assert "'rfm_segment'" in message  # DuckDB's names are case-insensitive
    assert "rfm.RFM_COLUMNS" in message and "tests.other_stage" in message
    assert _columns(profiles) == before  # checked before anything ran


def test_a_column_taken_without_an_alias_counts_by_its_own_name(profiles):
    # segment_source_columns adds rec.recommended_products, unaliased; an unnamed
    # stage is named by its position
    other = ProfileColumns(additions="NULL AS recommended_products")
    with pytest.raises(
        ValueError,
        match=r"'recommended_products' by segment_source\.segment_source_columns, stage 2 of 2",
    ):
        set_profile_columns(
            profiles, segment_source_columns(settings()), other, params={"as_of": AS_OF}
        )


def test_the_builds_own_stages_make_distinct_columns(profiles):
    stages = (FORMULA_CLV_COLUMNS, RFM_COLUMNS, PREDICTED_CLV_COLUMNS)
    check_distinct_columns(profiles, (*stages, segment_source_columns(settings())))
