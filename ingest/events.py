"""The event vocabulary: canonical types, their families, and the envelope model.

Stores send JSON objects shaped like Segment Spec "track"/"identify"/"page" calls or
in our canonical form. Both validate into one :class:`Event`:

- ``event_id`` (or Segment's ``messageId``) is the idempotency key;
- ``type`` is a canonical name (``order_completed``) or a Segment Spec event name
  (``"Order Completed"``, sent as ``{"type": "track", "event": "Order Completed"}`` or
  directly as ``"type"``); Segment's ``page`` and ``screen`` calls map to
  ``page_viewed`` and ``screen_viewed``, its ``alias`` and ``group`` calls to the
  identify family (``alias`` needs ``previousId``, ``group`` a ``groupId``);
- ``timestamp`` must carry a time zone: a naive time is ambiguous across stores;
- money (``price``, ``total``, ``revenue``, ``discount``) is ``Decimal`` so that
  totals add up exactly; ``currency`` is an ISO 4217 code per event (USD when absent,
  as in the Segment Spec);
- a value that becomes a typed column must fit it: money fits ``DECIMAL(18, 4)`` and
  a quantity ``INTEGER`` (storage/migrations), since DuckDB would store a value that
  does not fit as NULL. The columns are read from the payload by DuckDB, a second
  parser; ``cdp.ingest.validation`` also rejects the JSON on which the two could
  disagree (repeated keys, NaN and Infinity).

The schema is written as pydantic-validated ``TypedDict``s rather than ``BaseModel``s:
validation then builds plain dicts instead of one Python object per nested level,
which measured 2.5-4x faster per event and keeps validation off the critical path of
ingest (see benchmarks/ingest_throughput.py). Known fields are typed; any other key a
store sends is kept (``extra="allow"``), and the raw payload is stored whole.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, NotRequired

from pydantic import (
    AfterValidator,
    AliasChoices,
    AwareDatetime,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
)
from pydantic_core import CoreConfig, PydanticCustomError, SchemaValidator
from typing_extensions import TypedDict


class Family(StrEnum):
    BROWSE = "browse"
    CART = "cart"
    PURCHASE = "purchase"
    IDENTIFY = "identify"


FAMILY_OF_TYPE: dict[str, Family] = {
    "product_viewed": Family.BROWSE,
    "product_list_viewed": Family.BROWSE,
    "products_searched": Family.BROWSE,
    "page_viewed": Family.BROWSE,
    "screen_viewed": Family.BROWSE,
    "product_added": Family.CART,
    "product_removed": Family.CART,
    "cart_viewed": Family.CART,
    "checkout_started": Family.CART,
    "order_completed": Family.PURCHASE,
    "order_refunded": Family.PURCHASE,
    "order_cancelled": Family.PURCHASE,
    "identify": Family.IDENTIFY,
    # Segment's alias call: previous_id and user_id are one person (identity resolution
    # links them). Its group call ties a user to an account; stored, not yet used.
    "alias": Family.IDENTIFY,
    "group": Family.IDENTIFY,
}
CANONICAL_TYPES: tuple[str, ...] = tuple(FAMILY_OF_TYPE)

# Segment Spec names (also sent by RudderStack, Jitsu and PostHog SDKs) -> canonical.
SEGMENT_SPEC_NAMES: dict[str, str] = {
    "Product Viewed": "product_viewed",
    "Product List Viewed": "product_list_viewed",
    "Product Clicked": "product_viewed",
    "Products Searched": "products_searched",
    "Page Viewed": "page_viewed",
    "Product Added": "product_added",
    "Product Removed": "product_removed",
    "Cart Viewed": "cart_viewed",
    "Checkout Started": "checkout_started",
    "Order Completed": "order_completed",
    "Order Refunded": "order_refunded",
    "Order Cancelled": "order_cancelled",
    "Order Canceled": "order_cancelled",
    "Identify": "identify",
    "Screen Viewed": "screen_viewed",
    "page": "page_viewed",
    "screen": "screen_viewed",
    "identify": "identify",
    "alias": "alias",
    "group": "group",
}

_TYPE_LOOKUP: dict[str, str] = {name: name for name in CANONICAL_TYPES}
_TYPE_LOOKUP.update(SEGMENT_SPEC_NAMES)
_TYPE_LOOKUP.update({name.lower(): canonical for name, canonical in SEGMENT_SPEC_NAMES.items()})

# Required properties per canonical type, beyond the envelope. Kept as data so the
# rule is visible in one place and documented in the README's event table.
REQUIRED_PROPERTIES: dict[str, tuple[str, ...]] = {
    "product_viewed": ("product_id",),
    "product_added": ("product_id",),
    "product_removed": ("product_id",),
    "products_searched": ("query",),
    "order_completed": ("order_id",),
    "order_refunded": ("order_id",),
    "order_cancelled": ("order_id",),
}

# The largest value of an INTEGER column (events.quantity; a line's quantity is read
# as INTEGER when builds sum an order's units).
INTEGER_MAX = 2**31 - 1


def _fits_integer_column(value: int) -> int:
    if value > INTEGER_MAX:
        raise PydanticCustomError(
            "does_not_fit",
            "{value} does not fit (at most {limit})",
            {"value": value, "limit": INTEGER_MAX},
        )
    return value


# DECIMAL(18, 4): pydantic also bounds the digits before the point (18 - 4 = 14).
Money = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=4)]
Quantity = Annotated[int, Field(ge=0), AfterValidator(_fits_integer_column)]
CurrencyCode = Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{3}$", to_upper=True)]
Identifier = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]


class UnknownEventType(ValueError):
    """Raised for a ``type`` that is neither canonical nor a known Segment Spec name."""


def canonical_type(name: str) -> str:
    """Map a canonical or Segment Spec event name to the canonical name."""
    found = _TYPE_LOOKUP.get(name) or _TYPE_LOOKUP.get(name.strip().lower())
    if found is None:
        found = _TYPE_LOOKUP.get(name.strip().lower().replace(" ", "_"))
    if found is None:
        raise UnknownEventType(
            f"unknown event type {name!r}; expected one of {', '.join(CANONICAL_TYPES)} "
            "or a Segment Spec name such as 'Order Completed'"
        )
    return found


_OPEN = ConfigDict(extra="allow")


class Campaign(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    name: str | None
    source: str | None
    medium: str | None
    term: str | None
    content: str | None


class Context(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    channel: str | None
    locale: str | None
    campaign: Campaign | None
    device: dict[str, Any] | None


class ProductLine(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    product_id: Identifier | None
    sku: str | None
    name: str | None
    category: str | None
    price: Money | None
    quantity: Quantity | None


class Properties(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    product_id: Identifier | None
    sku: str | None
    name: str | None
    category: str | None
    price: Money | None
    quantity: Quantity | None
    currency: CurrencyCode | None
    order_id: Identifier | None
    total: Money | None
    revenue: Money | None
    discount: Money | None
    coupon: str | None
    products: list[ProductLine] | None
    cart_id: Identifier | None
    query: str | None
    url: str | None


class Consent(TypedDict, total=False):
    """Consent per channel; ``True`` opts in, ``False`` opts out, absent is unknown."""

    __pydantic_config__ = _OPEN  # type: ignore[misc]
    email: bool | None
    sms: bool | None
    push: bool | None
    ads: bool | None


class Traits(TypedDict, total=False):
    __pydantic_config__ = _OPEN  # type: ignore[misc]
    email: str | None
    phone: str | None
    first_name: Annotated[
        str | None, Field(validation_alias=AliasChoices("first_name", "firstName"))
    ]
    last_name: Annotated[str | None, Field(validation_alias=AliasChoices("last_name", "lastName"))]
    name: str | None
    birthday: date | None
    consent: Consent | None


class EventDict(TypedDict):
    """The envelope, as validated. Segment's camelCase names are accepted as aliases."""

    __pydantic_config__ = _OPEN  # type: ignore[misc]
    event_id: Annotated[
        Identifier, Field(validation_alias=AliasChoices("event_id", "messageId", "message_id"))
    ]
    type: str
    # Segment's track() call sends type "track" and the event name here.
    event: NotRequired[str | None]
    timestamp: AwareDatetime
    user_id: NotRequired[
        Annotated[Identifier | None, Field(validation_alias=AliasChoices("user_id", "userId"))]
    ]
    anonymous_id: NotRequired[
        Annotated[
            Identifier | None, Field(validation_alias=AliasChoices("anonymous_id", "anonymousId"))
        ]
    ]
    context: NotRequired[Context]
    properties: NotRequired[Properties]
    traits: NotRequired[Traits | None]
    # alias: the id the person was known by before user_id.
    previous_id: NotRequired[
        Annotated[
            Identifier | None, Field(validation_alias=AliasChoices("previous_id", "previousId"))
        ]
    ]
    # group: the account the user belongs to.
    group_id: NotRequired[
        Annotated[Identifier | None, Field(validation_alias=AliasChoices("group_id", "groupId"))]
    ]


def _check_envelope(event: EventDict) -> EventDict:
    """Rules across fields: canonical type, an identity, the properties each type needs."""
    name = event["type"]
    if name in ("track", "Track"):
        name = event.get("event") or ""
        if not name:
            raise ValueError("a 'track' call needs the event name in 'event'")
    event["type"] = canonical_type(name)
    if event.get("user_id") is None and event.get("anonymous_id") is None:
        raise ValueError("at least one of user_id or anonymous_id is required")
    for event_type, key in (("alias", "previous_id"), ("group", "group_id")):
        if event["type"] == event_type and event.get(key) is None:
            raise ValueError(f"{key} is required for {event_type} events")
    required = REQUIRED_PROPERTIES.get(event["type"])
    if required:
        props = event.get("properties") or {}
        for key in required:
            if props.get(key) is None:
                raise ValueError(f"properties.{key} is required for {event['type']} events")
        if (
            event["type"] == "order_completed"
            and props.get("total") is None
            and props.get("revenue") is None
        ):
            raise ValueError(
                "properties.total or properties.revenue is required for order_completed"
            )
    return event


Event = Annotated[EventDict, AfterValidator(_check_envelope)]
EVENT_ADAPTER: TypeAdapter[EventDict] = TypeAdapter(Event)

# The validator ingest runs on every message: EVENT_ADAPTER's schema with the JSON
# parser's string cache off. The cache pays for strings seen again, but ids, times and
# names are new in each event (3.53 -> 3.32 us an event). A TypeAdapter of a TypedDict
# takes no config of its own (the TypedDict's reaches only its nested schema), and its
# config here would be empty, so this one is the same validator with that one change.
EVENT_VALIDATOR = SchemaValidator(EVENT_ADAPTER.core_schema, CoreConfig(cache_strings=False))


def parse_event(raw: bytes | str) -> EventDict:
    """Validate one JSON event; raises ``pydantic.ValidationError`` naming the bad field."""
    return EVENT_VALIDATOR.validate_json(raw)
