from pathlib import Path

import pytest

from cdp.errors import ConfigError
from cdp.settings import Settings, load_settings, read_config_file

REPO = Path(__file__).resolve().parents[1]


def test_shipped_config_file_equals_the_built_in_defaults():
    from_file = load_settings(REPO / "config" / "cdp.toml")
    assert from_file == Settings()


def test_environment_overrides_file_and_flags_override_environment(tmp_path, monkeypatch):
    config = tmp_path / "c.toml"
    config.write_text('[kafka]\ngroup_id = "from-file"\nclient_id = "from-file"\n')
    monkeypatch.setenv("CDP_KAFKA__CLIENT_ID", "from-env")
    monkeypatch.setenv("CDP_KAFKA__GROUP_ID", "from-env")
    settings = load_settings(config, {"kafka": {"group_id": "from-flag"}})
    assert settings.kafka.group_id == "from-flag"
    assert settings.kafka.client_id == "from-env"


def test_bad_value_error_names_the_key_and_problem(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[ingest]\nmax_batch_records = 0\n")
    with pytest.raises(ConfigError, match=r"ingest\.max_batch_records: Input should be greater"):
        load_settings(config)


def test_misspelled_key_is_an_error_not_silently_ignored(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[kafka]\ngroup = "x"\n')
    with pytest.raises(ConfigError, match=r"kafka\.group: unknown key"):
        load_settings(config)


def test_invalid_topic_name_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match=r"topics\.cart: .*not a valid Kafka topic name"):
        load_settings(None, {"topics": {"cart": "has spaces"}})


def test_bootstrap_servers_must_be_host_port(tmp_path):
    with pytest.raises(
        ConfigError, match=r"kafka\.bootstrap_servers: .*'localhost' is not HOST:PORT"
    ):
        load_settings(None, {"kafka": {"bootstrap_servers": "localhost"}})


def test_broken_toml_names_the_file(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[kafka\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        read_config_file(config)


def test_collector_limits_that_cannot_work_together_are_errors_naming_both(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[collector]\nmax_event_bytes = 600000\nmax_request_bytes = 512000\n")
    with pytest.raises(ConfigError, match=r"max_event_bytes .* max_request_bytes"):
        load_settings(path)
    path.write_text("[collector]\nmax_in_flight_events = 1000\nmax_batch_events = 2500\n")
    with pytest.raises(ConfigError, match=r"max_in_flight_events .* max_batch_events"):
        load_settings(path)


def test_a_memory_limit_that_is_neither_a_size_nor_a_share_names_the_key(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[storage]\nmemory_limit = "lots"\n')
    with pytest.raises(ConfigError, match=r"storage\.memory_limit"):
        load_settings(config)


def test_the_duplicate_window_is_an_iso_duration_and_a_negative_one_names_the_key(tmp_path):
    from datetime import timedelta

    config = tmp_path / "c.toml"
    config.write_text('[ingest]\nduplicate_window = "P30D"\n')
    assert load_settings(config).ingest.duplicate_window == timedelta(days=30)
    config.write_text('[ingest]\nduplicate_window = "-P1D"\n')
    with pytest.raises(ConfigError, match=r"ingest\.duplicate_window: Value error, must not be"):
        load_settings(config)
