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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from cdp.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("config") / "cdp.toml"
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def check_listen(value: str, *, may_be_empty: bool) -> str:
    """A HOST:PORT to listen on (port 0 picks a free one)."""
    if value or not may_be_empty:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or int(port) > 65535:
            also = " (or empty to turn it off)" if may_be_empty else ""
            raise ValueError(f"{value!r} is not HOST:PORT{also}")
    return value


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


# A DuckDB memory_limit: a size ("8GB", "512MiB") or a share of the machine ("50%").
_MEMORY_SIZE = r"(?i)^\d+(\.\d+)?\s*(%|[kmgt]i?b)$"

# Producer and SDK retries arrive within minutes; a week leaves room for a consumer
# that was down for days (see ingest.duplicate_window).
DEFAULT_DUPLICATE_WINDOW = timedelta(days=7)


class IngestSettings(_Section):
    # DuckDB's memory while ingesting or loading (cdp ingest, cdp load, and cdp run
    # between builds; a build raises it to storage.memory_limit while it runs). Ingest
    # only appends: more memory is only a cache, and the process's size would grow
    # with history up to the limit. The process needs ~1 GB besides (batches being
    # validated and written), so the default keeps cdp load under 2 GB.
    memory_limit: str = Field(default="768MB", pattern=_MEMORY_SIZE)
    # DuckDB's threads in `cdp ingest`. Polling and validating already keep the cores
    # busy, and a second DuckDB thread cost more CPU than it saved in writing: one
    # stored ~8% more events a second (benchmarks/ingest_throughput.py). A statement
    # over the whole history (the duplicate window's refill) gets DuckDB's default.
    # `cdp run` keeps the default (its builds share the setting and need every core),
    # and so does `cdp load`, which validates in DuckDB.
    duckdb_threads: int = Field(default=1, ge=1, le=1024)
    # Records per poll; larger batches amortise the DuckDB transaction per batch.
    max_batch_records: int = Field(default=20000, ge=1, le=1_000_000)
    poll_timeout_ms: int = Field(default=500, ge=10)
    # Bigger payloads are dead-lettered (kept, with the reason) rather than parsed.
    max_event_bytes: int = Field(default=262144, ge=256)
    # With --until-idle: stop after this long with no new records and no lag.
    idle_timeout_s: float = Field(default=3.0, gt=0)
    # With --until-idle: give up (exit 1) once the broker has been unreachable this
    # long. Without it (`cdp ingest`, `cdp run`) ingest waits for the broker forever.
    broker_unreachable_timeout_s: float = Field(default=120.0, gt=0)
    # A stored offset past a partition's end (its data was lost: topic recreated,
    # in-memory broker restarted) or before its start (retention): "none" refuses to
    # go on and says how to reset; "earliest" / "latest" re-read from the partition's
    # start / skip to its end.
    offset_reset: str = Field(default="none", pattern=r"^(none|earliest|latest)$")
    # Events timed before this (UTC) are dead-lettered: a year-0001 timestamp would
    # switch the store's measured lifespan.
    earliest_event_time: datetime = datetime(2000, 1, 1, tzinfo=UTC)
    # Events timed further than this after they were received are dead-lettered
    # (ISO 8601 duration, e.g. "PT24H", or seconds).
    max_future_skew: timedelta = timedelta(hours=24)
    # A copy of a stored event (same event_id) is not stored again when the stored one
    # is timed within this of the newest event stored from its Kafka partition (from
    # any file, for cdp load) (ISO 8601 duration, or seconds).
    # An older copy is stored, and builds count it once. Each batch is checked against
    # the ids in the window, so its cost follows how many events the window holds.
    duplicate_window: timedelta = DEFAULT_DUPLICATE_WINDOW

    @field_validator("earliest_event_time")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    @field_validator("max_future_skew", "duplicate_window")
    @classmethod
    def _not_negative(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("must not be negative")
        return value


class ServiceSettings(_Section):
    """What `cdp run` offers its operator."""

    # HOST:PORT of the /healthz and /metrics (Prometheus) endpoint of `cdp run`;
    # empty turns it off. Port 0 picks a free port (logged at start).
    listen: str = "127.0.0.1:9464"
    # /healthz answers 503 "stuck" once the consumer's poll loop has not turned for this
    # long, or records wait and no batch was stored for this long (a broker outage is
    # reported with 200: a restart would not end it).
    stuck_after_s: float = Field(default=300.0, gt=0)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        return check_listen(value, may_be_empty=True)


class UiSettings(_Section):
    """`cdp ui`: the read-only customer explorer over the analyst database."""

    # HOST:PORT to serve on. Its pages show personal data, so any address but a
    # loopback one (127.0.0.1, ::1, localhost) needs access_token.
    listen: str = "127.0.0.1:8089"
    # Shared secret for a non-loopback bind: sent once to /login, then kept in a cookie
    # (or given as the header "Authorization: Bearer <token>"). Empty = none. Set it
    # through CDP_UI__ACCESS_TOKEN rather than in a file others can read.
    access_token: str = ""
    # Rows per page of customer timelines, search results and segment members.
    page_size: int = Field(default=50, ge=1, le=1000)
    # DuckDB's memory for the pages' queries (each snapshot; a publish briefly means two).
    memory_limit: str = Field(default="512MB", pattern=_MEMORY_SIZE)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        return check_listen(value, may_be_empty=False)

    @field_validator("access_token")
    @classmethod
    def _long_enough(cls, value: str) -> str:
        if value and len(value) < 16:
            raise ValueError("must be at least 16 characters (or empty for none)")
        return value


class CollectorSource(_Section):
    """One sender of events over HTTP (a web shop, an app, a back end), known by its key."""

    # Stored in each event's context.source, so a store can tell its senders apart.
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$")
    # Segment's write key: a public identifier, not a secret (browsers ship it).
    write_key: str = Field(min_length=8, max_length=200)
    # Origins a browser may send from (CORS), e.g. "https://shop.example"; "*" = any.
    # Empty: no browser may send (back ends and apps do not need CORS).
    allowed_origins: list[str] = []
    # Put the sender's IP address into context.ip. Personal data: off unless needed.
    capture_ip: bool = False

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            if origin != "*" and not re.match(r"^https?://[^/\s]+$", origin):
                raise ValueError(
                    f"{origin!r} is not an origin: scheme://host[:port] with no path, or '*'"
                )
        return [origin.lower() for origin in origins]


class CollectorSettings(_Section):
    """`cdp collect`: the Segment-compatible HTTP front door to the family topics."""

    # `cdp run` also serves the collector when true.
    enabled: bool = False
    listen: str = "127.0.0.1:8088"
    # Processes serving requests on the one port, each with its own Kafka producer: the
    # work is Python, so one process uses one core at most.
    workers: int = Field(default=2, ge=1, le=64)
    # Limits on what a request may carry, after gzip inflation (Segment's own).
    max_event_bytes: int = Field(default=32 * 1024, ge=1024)
    max_request_bytes: int = Field(default=500 * 1024, ge=1024)
    max_batch_events: int = Field(default=2500, ge=1)
    # A request is answered 200 only once Kafka acknowledged all its events; when that
    # takes longer than this, 503 with Retry-After (SDKs retry with the same messageIds).
    delivery_timeout_s: float = Field(default=10.0, gt=0)
    retry_after_s: int = Field(default=5, ge=1)
    # Back-pressure: events accepted but not yet acknowledged by Kafka, at most. A
    # request that would exceed it waits (up to delivery_timeout_s), then gets 503.
    max_in_flight_events: int = Field(default=20000, ge=100)
    # Connections served at once; more are answered 503 at once.
    max_connections: int = Field(default=1000, ge=1)
    sources: list[CollectorSource] = []

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        return check_listen(value, may_be_empty=False)

    @model_validator(mode="after")
    def _limits_fit_together(self) -> CollectorSettings:
        if self.max_event_bytes > self.max_request_bytes:
            raise ValueError(
                f"max_event_bytes ({self.max_event_bytes}) is larger than max_request_bytes "
                f"({self.max_request_bytes}): no request could carry such an event"
            )
        if self.max_in_flight_events < self.max_batch_events:
            raise ValueError(
                f"max_in_flight_events ({self.max_in_flight_events}) is below "
                f"max_batch_events ({self.max_batch_events}): a full batch would wait for "
                "every other request"
            )
        return self

    @field_validator("sources")
    @classmethod
    def _unique_keys_and_names(cls, sources: list[CollectorSource]) -> list[CollectorSource]:
        for attribute in ("name", "write_key"):
            values = [getattr(source, attribute) for source in sources]
            repeated = {value for value in values if values.count(value) > 1}
            if repeated:
                shown = ", ".join(sorted(repeated)) if attribute == "name" else "a write key"
                raise ValueError(f"two sources share the {attribute} {shown}")
        return sources


class StorageSettings(_Section):
    db_path: Path = Path("cdp.duckdb")
    # The read-only snapshot for analysts, republished after every build; empty means
    # <db name>.analyst.duckdb beside the live database. The HTML report goes beside it.
    analyst_db_path: str = ""
    # DuckDB's memory for builds: a size ("8GB", "512MiB") or a share of the machine's
    # memory ("40%"). A big build fills it (peak RSS is about the limit + 0.3 GiB) and
    # spills the rest to temp_directory, which cost no time at 3M customers; the rest
    # of the machine is left to the Python side and to other processes.
    memory_limit: str = Field(default="40%", pattern=_MEMORY_SIZE)
    # Where DuckDB spills; empty = <db_path>.tmp beside the live database.
    temp_directory: str = ""


class MoneySettings(_Section):
    """Profiles add up money across currencies in one reporting currency."""

    reporting_currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    # Units of each currency per one unit of the reporting currency. Orders in a
    # currency missing here are left out of money totals (and counted in the build log).
    exchange_rates: dict[str, float] = Field(
        default_factory=lambda: {"USD": 1.0, "EUR": 0.92, "GBP": 0.79, "VND": 25000.0}
    )

    @field_validator("exchange_rates")
    @classmethod
    def _positive_rates(cls, rates: dict[str, float]) -> dict[str, float]:
        for currency, rate in rates.items():
            if not re.match(r"^[A-Z]{3}$", currency):
                raise ValueError(f"{currency!r} is not an ISO 4217 code (three capital letters)")
            if rate <= 0:
                raise ValueError(f"rate for {currency} must be positive, got {rate}")
        return rates


class ClvSettings(_Section):
    # The one consistent window for AOV, purchase frequency and customer value.
    kpi_window_days: int = Field(default=365, ge=1)
    rolling_windows_days: list[int] = Field(default_factory=lambda: [30, 90, 365], min_length=1)
    # A customer with no order for this long counts as churned (lapsed).
    inactive_after_days: int = Field(default=180, ge=1)
    # Lifespan is measured from churned customers once the store has this much history.
    lifespan_min_history_days: int = Field(default=1095, ge=1)
    default_lifespan_years: float = Field(default=3.0, gt=0)
    gross_margin: float = Field(default=0.3, gt=0, le=1)
    horizon_months: int = Field(default=12, ge=1, le=120)
    annual_discount_rate: float = Field(default=0.1, ge=0, lt=1)
    # Which purchase-count model predicts: "auto" takes the one with the lowest
    # per-customer error in this build's backtest (clv_backtests).
    model: Literal["auto", "bgnbd", "pareto_nbd", "mbgnbd"] = "auto"
    # Days held out by the backtest; 0 = the prediction horizon (shortened to half the
    # store's history when that is shorter).
    backtest_holdout_days: int = Field(default=0, ge=0, le=3660)
    # Optional CSV with columns period (YYYY-MM), channel, spend (reporting currency).
    marketing_spend_csv: str = ""


class RfmSettings(_Section):
    window_days: int = Field(default=365, ge=1)
    # 5 = quintiles (common practice); 3 = thirds, as in the source material.
    scores: int = Field(default=5, ge=3, le=5)
    # "quantile": ranked against other buyers; "window": equal slices of the window
    # (with 3 scores and 365 days: within 4 months -> 3, 4-8 -> 2, 8-12 -> 1).
    recency_scoring: str = Field(default="quantile", pattern=r"^(quantile|window)$")

    @field_validator("scores")
    @classmethod
    def _three_or_five(cls, value: int) -> int:
        if value not in (3, 5):
            raise ValueError("must be 3 (thirds) or 5 (quintiles)")
        return value


class LoyaltySettings(_Section):
    # Tier name -> minimum net revenue to date (reporting currency).
    tiers: dict[str, float] = Field(
        default_factory=lambda: {"bronze": 0.0, "silver": 200.0, "gold": 1000.0, "platinum": 5000.0}
    )


class FunnelSettings(_Section):
    """Product ids per Customer Value Optimization tier; empty means no funnel stage."""

    lead_magnet: list[str] = Field(default_factory=list)
    tripwire: list[str] = Field(default_factory=list)
    core: list[str] = Field(default_factory=list)
    profit_maximizer: list[str] = Field(default_factory=list)


class ScheduleSettings(_Section):
    refresh_minutes: float = Field(default=15, gt=0)
    nightly_cron: str = "0 2 * * *"
    timezone: str = "UTC"
    misfire_grace_s: int = Field(default=3600, ge=1)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone such as 'Europe/Paris'") from None
        return value

    @field_validator("nightly_cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a 5-field cron expression: {exc}") from None
        return value


class SegmentsSettings(_Section):
    """Where segment definitions and destinations live, and how recommendations are made."""

    # The segments file (TOML); empty means the shipped config/segments.toml.
    file: str = ""
    # Cross-sell: products offered per customer, and how many orders must contain a
    # pair of products before it counts as "bought together".
    recommendations_per_customer: int = Field(default=3, ge=1, le=50)
    min_orders_together: int = Field(default=2, ge=1)


class ExportSettings(_Section):
    # Root of file destinations (a destination's relative path is under it); --out.
    out_dir: Path = Path("exports")


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
    service: ServiceSettings = ServiceSettings()
    collector: CollectorSettings = CollectorSettings()
    ui: UiSettings = UiSettings()
    storage: StorageSettings = StorageSettings()
    money: MoneySettings = MoneySettings()
    clv: ClvSettings = ClvSettings()
    rfm: RfmSettings = RfmSettings()
    loyalty: LoyaltySettings = LoyaltySettings()
    funnel: FunnelSettings = FunnelSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    segments: SegmentsSettings = SegmentsSettings()
    export: ExportSettings = ExportSettings()

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


# Keys whose values are secrets: an error names the key and the problem, never the value.
_SECRET_KEYS = ("access_token",)


def format_validation_error(exc: ValidationError, title: str) -> str:
    """One line per problem: the dotted key, then what is wrong with it."""
    lines = [f"{title}:"]
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"]) or "(root)"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key (check the spelling against config/cdp.toml)"
        got = "(hidden)" if key.endswith(_SECRET_KEYS) else repr(error.get("input"))
        lines.append(f"  {key}: {message} (got {got})")
    return "\n".join(lines)
