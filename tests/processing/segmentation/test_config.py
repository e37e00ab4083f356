import pytest

from cdp.errors import ConfigError
from cdp.processing.segmentation.config import load_segment_config
from cdp.settings import Settings

GOOD = """
[destinations.files]
type = "files"

[[segments]]
name = "repeat"
rule = "orders >= 2"
destinations = ["files"]
consent = "email"
traits = ["orders"]
"""


def test_the_shipped_segments_all_compile_against_the_profile_columns():
    config = load_segment_config(Settings())
    names = {segment.name for segment in config.segments}
    assert {
        "welcome",
        "champions",
        "abandoned_cart",
        "top_predicted_clv",
        "lookalike_seed",
    } <= names
    assert set(config.destinations) == {"files", "ad_audiences"}


def test_rolling_window_columns_follow_the_configured_windows():
    settings = Settings(clv={"rolling_windows_days": [7, 60]})
    text = GOOD.replace("orders >= 2", "orders_7d >= 1 and cart_adds_60d > 0")
    assert load_segment_config(settings, text).segments[0].rule.columns == {
        "orders_7d",
        "cart_adds_60d",
    }
    with pytest.raises(ConfigError, match="unknown column 'orders_30d'"):
        load_segment_config(settings, GOOD.replace("orders >= 2", "orders_30d >= 1"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("orders >= 2", "orders >= 'two'"),
            "segment 'repeat': rule \"orders >= 'two'\": type mismatch: 'orders' needs a number",
        ),
        (
            ("orders >= 2", "order_count >= 2"),
            "segment 'repeat': rule 'order_count >= 2': unknown column",
        ),
        (
            ('destinations = ["files"]', 'destinations = ["crm"]'),
            "segment 'repeat': destinations: unknown destination 'crm' (known: files)",
        ),
        (
            ('traits = ["orders"]', 'traits = ["shoe_size"]'),
            "segment 'repeat': traits: unknown column 'shoe_size'",
        ),
        (('consent = "email"', 'consent = "carrier-pigeon"'), "segments.0.consent"),
        (('type = "files"', 'type = "ftp"'), "destinations.files"),
        (('name = "repeat"', 'name = "Repeat Buyers"'), "segments.0.name"),
        (
            ('rule = "orders >= 2"', 'rule = "orders >= 2"\ncolour = "red"'),
            "segments.0.colour: unknown key",
        ),
    ],
)
def test_config_errors_name_the_segment_and_the_problem(change, message):
    with pytest.raises(ConfigError) as caught:
        load_segment_config(Settings(), GOOD.replace(*change))
    assert message in str(caught.value)


def test_two_segments_with_one_name_are_an_error():
    with pytest.raises(ConfigError, match="'repeat': the name is used by an earlier segment"):
        load_segment_config(Settings(), GOOD + GOOD[GOOD.index("[[segments]]") :])


def test_a_missing_segments_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"segments\.file: cannot read"):
        load_segment_config(Settings(segments={"file": str(tmp_path / "nope.toml")}))
