"""Segment definitions and destinations: the segments file, validated when loaded.

The file (``[segments] file``, else the shipped ``config/segments.toml``) holds
``[destinations.NAME]`` tables and ``[[segments]]``. Loading checks everything a
nightly run would trip over — unknown keys, unknown destinations, consent channels,
trait columns — and compiles every rule against the columns of the segment source,
so a mistake is a ``ConfigError`` naming the segment and the token, at startup.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cdp.errors import ConfigError
from cdp.processing.segmentation.rules import CompiledRule, RuleError, compile_rule
from cdp.processing.stages.segment_source import segment_catalog
from cdp.settings import Settings, format_validation_error

Channel = Literal["email", "sms", "push", "ads", "none"]
_NAME = r"^[a-z][a-z0-9_]{0,62}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FilesDestination(_Strict):
    type: Literal["files"]
    path: Path = Path("segments")
    formats: list[Literal["csv", "parquet", "jsonl"]] = Field(
        default_factory=lambda: ["csv", "parquet", "jsonl"], min_length=1
    )
    consent: Channel | None = None


class AudienceDestination(_Strict):
    type: Literal["ad_audience"]
    path: Path = Path("audiences")
    consent: Channel | None = "ads"
    # Digits of the country calling code for phones stored without one ("" = skip them).
    default_country_code: str = Field(default="", pattern=r"^[0-9]{0,3}$")


class KafkaDestination(_Strict):
    type: Literal["kafka"]
    topic: str = Field(pattern=r"^[A-Za-z0-9._-]{1,249}$")
    consent: Channel | None = None


class WebhookDestination(_Strict):
    type: Literal["webhook"]
    url: str = Field(pattern=r"^https?://")
    batch_size: int = Field(default=500, ge=1, le=100_000)
    max_attempts: int = Field(default=5, ge=1, le=20)
    backoff_s: float = Field(default=0.5, ge=0)
    timeout_s: float = Field(default=10.0, gt=0)
    headers: dict[str, str] = Field(default_factory=dict)
    consent: Channel | None = None


Destination = Annotated[
    FilesDestination | AudienceDestination | KafkaDestination | WebhookDestination,
    Field(discriminator="type"),
]


class SegmentDefinition(_Strict):
    name: str = Field(pattern=_NAME)
    description: str = ""
    rule: str
    destinations: list[str] = Field(default_factory=list)
    consent: Channel
    traits: list[str] = Field(default_factory=list)


class _SegmentsFile(_Strict):
    destinations: dict[str, Destination] = Field(default_factory=dict)
    segments: list[SegmentDefinition] = Field(default_factory=list)

    @field_validator("destinations")
    @classmethod
    def _destination_names(cls, value: dict[str, object]) -> dict[str, object]:
        for name in value:
            if not re.match(_NAME, name):
                raise ValueError(f"destination name {name!r}: use lower-case letters, digits, '_'")
        return value


@dataclass(frozen=True)
class Segment:
    definition: SegmentDefinition
    rule: CompiledRule

    @property
    def name(self) -> str:
        return self.definition.name


@dataclass(frozen=True)
class SegmentConfig:
    source: str
    destinations: dict[
        str, FilesDestination | AudienceDestination | KafkaDestination | WebhookDestination
    ]
    segments: list[Segment]

    def consent_channel(self, segment: Segment, destination: str) -> str:
        """The destination's channel when it names one, else the segment's."""
        return self.destinations[destination].consent or segment.definition.consent


def segments_file(settings: Settings) -> tuple[str, str]:
    """(where from, TOML text) of the segments file in use."""
    if settings.segments.file:
        path = Path(settings.segments.file)
        try:
            return str(path), path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"segments.file: cannot read {str(path)!r}: {exc}") from None
    shipped = resources.files("cdp.config").joinpath("segments.toml")
    return "the shipped config/segments.toml", shipped.read_text(encoding="utf-8")


def load_segment_config(settings: Settings, text: str | None = None) -> SegmentConfig:
    """Read, validate and compile the segments; ``text`` replaces the file (tests)."""
    source, text = ("the given text", text) if text is not None else segments_file(settings)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"segments file {source} is not valid TOML: {exc}") from None
    try:
        parsed = _SegmentsFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, f"invalid segments file {source}")) from None
    catalog = segment_catalog(settings)
    segments, seen = [], set()
    for index, definition in enumerate(parsed.segments):
        where = f"segments file {source}: segment {definition.name!r}"
        if definition.name in seen:
            raise ConfigError(f"{where}: the name is used by an earlier segment")
        seen.add(definition.name)
        for destination in definition.destinations:
            if destination not in parsed.destinations:
                known = ", ".join(sorted(parsed.destinations)) or "none defined"
                raise ConfigError(
                    f"{where}: destinations: unknown destination {destination!r} (known: {known})"
                )
        for trait in definition.traits:
            if trait not in catalog:
                raise ConfigError(f"{where}: traits: unknown column {trait!r}")
        try:
            rule = compile_rule(definition.rule, catalog, param_prefix=f"s{index}_")
        except RuleError as exc:
            raise ConfigError(f"{where}: rule {definition.rule!r}: {exc}") from None
        segments.append(Segment(definition, rule))
    return SegmentConfig(source, dict(parsed.destinations), segments)
