"""JSON no ordinary encoder writes: repeated keys and non-standard number literals,
and one message per reject rule of issue 14 ("one parse, one truth").

``json.dumps`` cannot repeat a key, so bodies here are written by :func:`to_json`,
where an object may be given as a :class:`Pairs` list (keys may repeat) and a
:class:`Literal` is written as it is (``NaN``, ``Infinity``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.helpers import event


class Pairs(list):
    """A JSON object as (key, value) pairs, in order; a key may appear twice."""


@dataclass(frozen=True)
class Literal:
    """Written into the JSON text as it is, e.g. ``NaN``."""

    text: str


def to_json(value: Any, *, separator: str = ": ") -> bytes:
    return _write(value, separator).encode()


def _write(value: Any, separator: str) -> str:
    if isinstance(value, dict):
        value = Pairs(value.items())
    if isinstance(value, Pairs):
        members = (f"{json.dumps(k)}{separator}{_write(v, separator)}" for k, v in value)
        return "{" + ", ".join(members) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_write(item, separator) for item in value) + "]"
    if isinstance(value, Literal):
        return value.text
    return json.dumps(value)


def repeat_key(body: dict[str, Any], path: str, first: Any) -> Pairs:
    """``body`` with the key at ``path`` (dotted; list items by index) sent twice:
    first with ``first``, then with the value it has in ``body``."""
    *parents, key = path.split(".")
    root = Pairs(body.items())
    container: Any = root
    for part in parents:
        container = _child(container, part)
    index = next(n for n, (name, _) in enumerate(container) if name == key)
    container.insert(index, (key, first))
    return root


def _child(container: Any, part: str) -> Any:
    """Replace the child at ``part`` with a copy that can be changed, and return it."""
    if isinstance(container, list) and not isinstance(container, Pairs):
        child = container[int(part)]
        container[int(part)] = copy = _editable(child)
        return copy
    index = next(n for n, (name, _) in enumerate(container) if name == part)
    copy = _editable(container[index][1])
    container[index] = (part, copy)
    return copy


def _editable(value: Any) -> Any:
    if isinstance(value, dict):
        return Pairs(value.items())
    if isinstance(value, list):
        return list(value)
    return value


def order_with_lines(event_id: str, first_quantity: int = 1, **properties: Any) -> dict:
    lines = [
        {"product_id": "p-1", "price": "10.00", "quantity": first_quantity},
        {"product_id": "p-2", "price": "5.00", "quantity": 2},
    ]
    props = {"order_id": f"o-{event_id}", "total": "20.00", "products": lines, **properties}
    return event("order_completed", event_id, properties=props)


@dataclass(frozen=True)
class Bad:
    """One message each reject rule must dead-letter as ``invalid_event``."""

    name: str
    value: bytes
    reason: str  # the reason must contain this


def reject_cases(now: datetime | None = None) -> list[Bad]:
    """A message for every reject rule; event ids are unique across the list."""
    now = now or datetime.now(UTC)
    later = (now + timedelta(days=3)).replace(microsecond=0)
    later_text = later.isoformat().replace("+00:00", "Z")
    browse = event("page_viewed", "x")
    return [
        Bad(
            "repeated top-level key",
            to_json(repeat_key(event("page_viewed", "rep-top"), "user_id", "someone-else")),
            "user_id: repeated key",
        ),
        Bad(
            "repeated order total",
            to_json(repeat_key(event("order_completed", "rep-total"), "properties.total", "5000")),
            "properties.total: repeated key",
        ),
        Bad(
            "repeated key in an order line",
            to_json(repeat_key(order_with_lines("rep-line"), "properties.products.1.price", "-1")),
            "properties.products.1.price: repeated key",
        ),
        Bad(
            "repeated key in the campaign",
            to_json(repeat_key(event("page_viewed", "rep-utm"), "context.campaign.source", "x")),
            "context.campaign.source: repeated key",
        ),
        Bad(
            "repeated key in an unknown nested object",
            to_json(
                repeat_key(
                    {**browse, "event_id": "rep-free", "extra": {"deep": {"k": 1}}},
                    "extra.deep.k",
                    2,
                )
            ),
            "extra.deep.k: repeated key",
        ),
        Bad(
            "timestamp in year 0001",
            to_json({**browse, "event_id": "ts-0001", "timestamp": "0001-01-01T00:00:00Z"}),
            "timestamp: 0001-01-01T00:00:00Z is before ingest.earliest_event_time "
            "(2000-01-01T00:00:00Z)",
        ),
        Bad(
            "timestamp in year 9999",
            to_json({**browse, "event_id": "ts-9999", "timestamp": "9999-12-31T23:59:59Z"}),
            "timestamp: 9999-12-31T23:59:59Z is more than ingest.max_future_skew (PT24H) after",
        ),
        Bad(
            "timestamp three days ahead",
            to_json({**browse, "event_id": "ts-later", "timestamp": later_text}),
            f"timestamp: {later_text} is more than ingest.max_future_skew (PT24H) after",
        ),
        Bad(
            "quantity beyond INTEGER",
            to_json(
                event(
                    "product_added",
                    "qty-big",
                    properties={"product_id": "p", "quantity": 3_000_000_000},
                )
            ),
            "properties.quantity: 3000000000 does not fit (at most 2147483647)",
        ),
        Bad(
            "line quantity beyond INTEGER",
            to_json(order_with_lines("qty-line", first_quantity=2_147_483_648)),
            "properties.products.0.quantity: 2147483648 does not fit (at most 2147483647)",
        ),
        Bad(
            "NaN in a free property",
            to_json({**browse, "event_id": "nan", "properties": {"x": Literal("NaN")}}),
            "properties.x: NaN is not a number JSON allows",
        ),
        Bad(
            "Infinity in the device",
            to_json(
                {
                    **browse,
                    "event_id": "inf",
                    "context": {"device": {"type": "mobile", "ratio": Literal("Infinity")}},
                }
            ),
            "context.device.ratio: Infinity is not a number JSON allows",
        ),
        Bad(
            "-Infinity in a list",
            to_json({**browse, "event_id": "-inf", "scores": [1, 2, Literal("-Infinity")]}),
            "scores.2: -Infinity is not a number JSON allows",
        ),
        Bad(
            "NaN as a price",
            to_json(
                event(
                    "product_viewed",
                    "nan-price",
                    properties={"product_id": "p", "price": Literal("NaN")},
                )
            ),
            "properties.price: NaN is not a number JSON allows",
        ),
    ]
