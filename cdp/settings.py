"""Configuration: one validated settings object for every command.

Precedence, highest first: command-line flags, environment variables
(``CDP_<SECTION>__<KEY>``, e.g. ``CDP_KAFKA__BOOTSTRAP_SERVERS``), the TOML file,
built-in defaults. The TOML file is the one given with ``--config`` or
``CDP_CONFIG``, else ``config/cdp.toml`` in the working directory when it exists.
The built-in defaults equal the commented ``config/cdp.toml`` shipped in the
repository (a test keeps the two in step).

Every section forbids unknown keys, so a typo is an error naming the key rather
than a silently ignored setting.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from cdp.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("config") / "cdp.toml"
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class TopicSettings(_Section):
    """One topic per event family; a store's events for a family go to its topic."""

    purchase: str = "store.purchases"
    browse: str = "store.browse"
    cart: str = "store.cart"
    identify: str = "store.identify"
    partitions: int = Field(default=4, ge=1, le=1000)
    replication_factor: int = Field(default=1, ge=1, le=10)

    @field_validator("purchase", "browse", "cart", "identify")
    @classmethod
    def _valid_topic_name(cls, value: str) -> str:
        if not _TOPIC_NAME.match(value):
            raise ValueError(
                f"{value!r} is not a valid Kafka topic name "
                "(1-249 characters of letters, digits, '.', '_' or '-')"
            )
        return value

    def by_family(self) -> dict[str, str]:
        return {
            "purchase": self.purchase,
            "browse": self.browse,
            "cart": self.cart,
            "identify": self.identify,
        }


class KafkaSettings(_Section):
    # Empty means "no Kafka configured": `cdp demo` then starts the bundled broker.
    bootstrap_servers: str = ""
    group_id: str = Field(default="cdp-ingest", min_length=1)
    client_id: str = Field(default="cdp", min_length=1)
    # Shorter than kafka-python's defaults so a group (re)join takes ~3 s, not ~23 s.
    session_timeout_ms: int = Field(default=6000, ge=1000)
    heartbeat_interval_ms: int = Field(default=1000, ge=100)
    max_poll_interval_ms: int = Field(default=60000, ge=1000)

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_port_list(cls, value: str) -> str:
        for server in filter(None, (part.strip() for part in value.split(","))):
            host, _, port = server.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"{server!r} is not HOST:PORT")
        return value


class IngestSettings(_Section):
    # Records per poll; larger batches amortise the DuckDB transaction per batch.
    max_batch_records: int = Field(default=20000, ge=1, le=1_000_000)
    poll_timeout_ms: int = Field(default=500, ge=10)
    # Bigger payloads are dead-lettered (kept, with the reason) rather than parsed.
    max_event_bytes: int = Field(default=262144, ge=256)
    # With --until-idle: stop after this long with no new records and no lag.
    idle_timeout_s: float = Field(default=3.0, gt=0)


class StorageSettings(_Section):
    db_path: Path = Path("cdp.duckdb")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CDP_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    kafka: KafkaSettings = KafkaSettings()
    topics: TopicSettings = TopicSettings()
    ingest: IngestSettings = IngestSettings()
    storage: StorageSettings = StorageSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _DictSource(settings_cls, _CURRENT_FILE_DATA))


# The TOML data for the settings being built. pydantic-settings builds sources from
# the class, so the file's contents reach it through this module-level holder,
# which load_settings sets and clears around construction.
_CURRENT_FILE_DATA: dict[str, Any] = {}


class _DictSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def resolve_config_path(explicit: Path | None) -> Path | None:
    """The config file to read: explicit, else $CDP_CONFIG, else ./config/cdp.toml if present."""
    if explicit is not None:
        return explicit
    from_env = os.environ.get("CDP_CONFIG")
    if from_env:
        return Path(from_env)
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.is_file() else None


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}") from None


def load_settings(
    config_path: Path | None = None, overrides: dict[str, dict[str, Any]] | None = None
) -> Settings:
    """Build the settings from file, environment and flags; ConfigError names any bad key.

    ``overrides`` holds command-line values by section, e.g. ``{"kafka": {"group_id": "x"}}``;
    ``None`` values are ignored so that absent flags do not mask the file or environment.
    """
    path = resolve_config_path(config_path)
    file_data = read_config_file(path) if path is not None else {}
    init = {
        section: {key: value for key, value in values.items() if value is not None}
        for section, values in (overrides or {}).items()
    }
    init = {section: values for section, values in init.items() if values}
    _CURRENT_FILE_DATA.clear()
    _CURRENT_FILE_DATA.update(file_data)
    try:
        return Settings(**init)
    except ValidationError as exc:
        origin = f" (config file {str(path)!r}, environment CDP_*, or flags)" if path else ""
        raise ConfigError(format_validation_error(exc, "invalid configuration") + origin) from None
    finally:
        _CURRENT_FILE_DATA.clear()


def format_validation_error(exc: ValidationError, title: str) -> str:
    """One line per problem: the dotted key, then what is wrong with it."""
    lines = [f"{title}:"]
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(root)"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key (check the spelling against config/cdp.toml)"
        lines.append(f"  {key}: {message} (got {error.get('input')!r})")
    return "\n".join(lines)
