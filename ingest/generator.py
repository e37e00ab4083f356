"""A seeded synthetic store, written as JSON lines: for demos, tests and benchmarks.

Customers behave the way CLV models assume real ones do, so that later stages have
something honest to fit: each has their own purchase rate (gamma-distributed across
customers) and after every order a chance of going quiet for good (beta-distributed),
which yields long-tailed spend, many one-time buyers and a core of repeat buyers.

What a store's stream holds is all here: anonymous browsing that is identified at
sign-up or first order (earlier events carry only the anonymous id), carts that are
abandoned, refunds and cancellations, several currencies, about a fifth of events in
Segment Spec shape ("type": "track", "event": "Order Completed", camelCase ids), a
small share of exact re-sends (a producer retrying) and a small share of malformed
events of every kind ingest must dead-letter.

The same seed, customer count and end date give the same file, byte for byte.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

HISTORY_DAYS = 730
CURRENCIES = (("USD", 1.0, 0.70), ("EUR", 0.92, 0.15), ("GBP", 0.79, 0.08), ("VND", 25000.0, 0.07))
CATEGORIES = ("cakes", "bread", "coffee", "tea", "gift boxes", "kitchenware", "chocolate", "pastry")
CHANNELS = ("web", "web", "web", "ios", "android")
SOURCES = (None, None, "google", "facebook", "newsletter", "instagram", "tiktok")
MALFORMED_SHARE = 0.004
RESEND_SHARE = 0.002
SEGMENT_SHAPE_SHARE = 0.2
BUYER_SHARE = 0.45
RETURN_VISITS = 3

_SEGMENT_NAMES = {
    "product_viewed": "Product Viewed",
    "product_list_viewed": "Product List Viewed",
    "products_searched": "Products Searched",
    "page_viewed": "Page Viewed",
    "product_added": "Product Added",
    "product_removed": "Product Removed",
    "cart_viewed": "Cart Viewed",
    "checkout_started": "Checkout Started",
    "order_completed": "Order Completed",
    "order_refunded": "Order Refunded",
    "order_cancelled": "Order Cancelled",
}


@dataclass
class GenerateReport:
    customers: int = 0
    events: int = 0
    malformed: int = 0
    resent: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Product:
    product_id: str
    sku: str
    name: str
    category: str
    usd_price: float


def _catalog(rng: random.Random, size: int = 240) -> list[_Product]:
    products = []
    for index in range(size):
        category = CATEGORIES[index % len(CATEGORIES)]
        price = round(min(400.0, rng.lognormvariate(math.log(18), 0.8)), 2)
        products.append(
            _Product(
                f"p-{index:04d}",
                f"SKU-{index:05d}",
                f"{category.title()} #{index}",
                category,
                price,
            )
        )
    return products


class _Writer:
    """Turns event dicts into lines, in canonical or Segment shape, with the faults."""

    def __init__(self, rng: random.Random, seed: int, report: GenerateReport) -> None:
        self._rng = rng
        self._seed = seed
        self._counter = 0
        self._report = report
        self.lines: list[bytes] = []

    def emit(
        self,
        event_type: str,
        at: datetime,
        ids: dict,
        context: dict,
        properties: dict | None = None,
        traits: dict | None = None,
    ) -> None:
        rng = self._rng
        self._counter += 1
        event_id = f"evt-{self._seed:x}-{self._counter:09x}"
        stamp = at.isoformat(timespec="milliseconds")
        if event_type != "identify" and rng.random() < SEGMENT_SHAPE_SHARE:
            event = {
                "messageId": event_id,
                "type": "track",
                "event": _SEGMENT_NAMES[event_type],
                "timestamp": stamp,
            }
            if ids.get("user_id"):
                event["userId"] = ids["user_id"]
            event["anonymousId"] = ids["anonymous_id"]
        else:
            event = {
                "event_id": event_id,
                "type": event_type,
                "timestamp": stamp,
                "anonymous_id": ids["anonymous_id"],
            }
            if ids.get("user_id"):
                event["user_id"] = ids["user_id"]
        event["context"] = context
        if properties:
            event["properties"] = properties
        if traits:
            event["traits"] = traits
        line = json.dumps(event, separators=(",", ":")).encode()
        self._report.events += 1
        self._report.by_type[event_type] = self._report.by_type.get(event_type, 0) + 1
        roll = rng.random()
        if roll < MALFORMED_SHARE:
            line = self._malform(event, line)
            self._report.malformed += 1
        self.lines.append(line)
        if MALFORMED_SHARE <= roll < MALFORMED_SHARE + RESEND_SHARE:
            self.lines.append(line)  # a producer retry: same event_id, sent twice
            self._report.resent += 1

    def _malform(self, event: dict, line: bytes) -> bytes:
        kind = self._rng.randrange(7)
        if kind == 0:
            return line[: len(line) // 2]  # truncated JSON
        if kind == 1:
            return b"\xff\xfe" + line[2:]  # not UTF-8
        broken = dict(event)
        if kind == 2:
            broken.pop("timestamp")
        elif kind == 3:
            broken["timestamp"] = broken["timestamp"][:19]  # no time zone
        elif kind == 4:
            broken["type"], broken["event"] = "product_teleported", None
        elif kind == 5:
            broken["properties"] = {**broken.get("properties", {}), "price": "twelve"}
        else:
            broken.pop("anonymous_id", None), broken.pop("anonymousId", None)
            broken.pop("user_id", None), broken.pop("userId", None)
        return json.dumps(broken, separators=(",", ":")).encode()


def generate_store(
    path: Path,
    *,
    customers: int,
    seed: int = 42,
    end: date | None = None,
    buyer_share: float = BUYER_SHARE,
    return_visits: int = RETURN_VISITS,
    progress: Callable[[int], None] | None = None,
) -> GenerateReport:
    """Write a synthetic store's events to ``path`` (JSON lines) and report what was written.

    ``buyer_share`` is the share of visitors who ever buy, and ``return_visits`` the most
    browsing sessions a visitor who never buys comes back for. The defaults give ~18
    events per customer; 0.19 and 1 give ~10, the shape of the profile benchmark's target.
    """
    if customers < 1:
        raise ValueError("customers must be at least 1")
    if not 0.0 <= buyer_share <= 1.0:
        raise ValueError(f"buyer_share must be between 0 and 1, got {buyer_share}")
    if return_visits < 0:
        raise ValueError(f"return_visits must be 0 or more, got {return_visits}")
    rng = random.Random(seed)
    end_at = datetime.combine(end or date.today(), datetime.min.time(), tzinfo=UTC)
    start_at = end_at - timedelta(days=HISTORY_DAYS)
    catalog = _catalog(rng)
    report = GenerateReport(customers=customers)
    writer = _Writer(rng, seed, report)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        for index in range(customers):
            _simulate_customer(
                rng, index, seed, catalog, (start_at, end_at), writer, buyer_share, return_visits
            )
            if len(writer.lines) >= 20000:
                out.write(b"\n".join(writer.lines) + b"\n")
                writer.lines.clear()
            if progress and (index + 1) % 5000 == 0:
                progress(index + 1)
        if writer.lines:
            out.write(b"\n".join(writer.lines) + b"\n")
    return report


def _simulate_customer(
    rng: random.Random,
    index: int,
    seed: int,
    catalog: list[_Product],
    history: tuple[datetime, datetime],
    writer: _Writer,
    buyer_share: float,
    return_visits: int,
) -> None:
    start_at, end_at = history
    span_s = (end_at - start_at).total_seconds()
    first_seen = start_at + timedelta(seconds=rng.random() * span_s * 0.95)
    ids = {"anonymous_id": f"anon-{seed:x}-{index:07x}", "user_id": None}
    currency, fx, _ = rng.choices(CURRENCIES, weights=[c[2] for c in CURRENCIES])[0]
    context = {"channel": rng.choice(CHANNELS), "locale": "en-US" if currency == "USD" else "en-GB"}
    source = rng.choice(SOURCES)
    if source:
        context["campaign"] = {
            "source": source,
            "medium": "cpc" if source == "google" else "social",
            "name": f"{source}-launch",
        }
    favourite = rng.choice(CATEGORIES)
    # BG/NBD-style heterogeneity: purchase rate per day, and a drop-out chance per order.
    will_buy = rng.random() < buyer_share
    rate = rng.gammavariate(0.9, 1 / 110) if will_buy else 0.0
    dropout = rng.betavariate(1.2, 3.0)
    spend_scale = rng.lognormvariate(0, 0.6)

    def money(usd: float) -> str:
        value = usd * fx
        return f"{round(value):d}" if currency == "VND" else f"{value:.2f}"

    def pick() -> _Product:
        pool = [p for p in rng.sample(catalog, 6) if p.category == favourite] or rng.sample(
            catalog, 1
        )
        return pool[0]

    def browse(at: datetime) -> datetime:
        writer.emit("page_viewed", at, ids, context, {"url": "https://shop.example/", "path": "/"})
        at += timedelta(seconds=rng.randint(5, 90))
        if rng.random() < 0.5:
            writer.emit(
                "product_list_viewed",
                at,
                ids,
                context,
                {"category": favourite, "list_id": favourite},
            )
        if rng.random() < 0.3:
            at += timedelta(seconds=rng.randint(5, 60))
            writer.emit(
                "products_searched",
                at,
                ids,
                context,
                {"query": rng.choice((favourite, "gift", "sale", "new"))},
            )
        for _ in range(rng.randint(1, 2)):
            product = pick()
            at += timedelta(seconds=rng.randint(10, 240))
            writer.emit(
                "product_viewed", at, ids, context, _product_props(product, money, currency)
            )
        return at

    def identify(at: datetime) -> None:
        ids["user_id"] = f"user-{seed:x}-{index:07d}"
        traits = {
            "email": f"Customer.{index}@Example.com ",
            "first_name": "Customer",
            "last_name": str(index),
        }
        if rng.random() < 0.6:
            # Unique per customer (up to 10M): shared numbers would merge customers.
            traits["phone"] = (
                f"+1 (5{index // 10**6 % 10}{index // 10**4 % 100:02d}) {index % 10**4:04d}"
            )
        if rng.random() < 0.5:
            traits["birthday"] = (
                f"{rng.randint(1950, 2004)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            )
        traits["consent"] = {
            "email": rng.random() < 0.7,
            "sms": rng.random() < 0.3,
            "ads": rng.random() < 0.6,
        }
        writer.emit("identify", at, ids, context, None, traits)

    def cart(at: datetime, order_number: int | None) -> datetime:
        label = "x" if order_number is None else order_number
        cart_id = f"cart-{seed:x}-{index:07x}-{label}-{rng.randrange(1 << 20):05x}"
        lines = []
        for _ in range(1 if rng.random() < 0.6 else rng.randint(2, 4)):
            product = pick()
            quantity = 1 if rng.random() < 0.8 else rng.randint(2, 3)
            at += timedelta(seconds=rng.randint(20, 300))
            writer.emit(
                "product_added",
                at,
                ids,
                context,
                {
                    **_product_props(product, money, currency),
                    "quantity": quantity,
                    "cart_id": cart_id,
                },
            )
            lines.append((product, quantity))
        if rng.random() < 0.1 and len(lines) > 1:
            product, quantity = lines.pop()
            at += timedelta(seconds=rng.randint(20, 120))
            writer.emit(
                "product_removed",
                at,
                ids,
                context,
                {
                    **_product_props(product, money, currency),
                    "quantity": quantity,
                    "cart_id": cart_id,
                },
            )
        at += timedelta(seconds=rng.randint(10, 120))
        writer.emit("cart_viewed", at, ids, context, {"cart_id": cart_id, "currency": currency})
        if order_number is None:
            return at  # abandoned
        if ids["user_id"] is None:
            identify(at)
        at += timedelta(seconds=rng.randint(20, 200))
        writer.emit(
            "checkout_started", at, ids, context, {"cart_id": cart_id, "currency": currency}
        )
        order_id = f"ord-{seed:x}-{index:07x}-{order_number}"
        subtotal = sum(product.usd_price * quantity for product, quantity in lines) * spend_scale
        discount = round(subtotal * 0.1, 2) if rng.random() < 0.15 else 0.0
        products = [
            {**_product_props(p, money, currency, scale=spend_scale), "quantity": q}
            for p, q in lines
        ]
        for line in products:
            line.pop("currency")
        properties = {
            "order_id": order_id,
            "cart_id": cart_id,
            "total": money(subtotal - discount),
            "discount": money(discount),
            "currency": currency,
            "products": products,
        }
        if discount:
            properties["coupon"] = "WELCOME10"
        at += timedelta(seconds=rng.randint(30, 300))
        writer.emit("order_completed", at, ids, context, properties)
        outcome = rng.random()
        if outcome < 0.04:
            later = min(at + timedelta(days=rng.randint(2, 30)), end_at - timedelta(seconds=1))
            writer.emit(
                "order_refunded",
                later,
                ids,
                context,
                {"order_id": order_id, "total": properties["total"], "currency": currency},
            )
        elif outcome < 0.05:
            later = at + timedelta(hours=rng.randint(1, 20))
            writer.emit(
                "order_cancelled",
                min(later, end_at - timedelta(seconds=1)),
                ids,
                context,
                {"order_id": order_id, "total": properties["total"], "currency": currency},
            )
        return at

    at = browse(first_seen)
    if rng.random() < 0.25:
        identify(at + timedelta(seconds=30))  # signed up without buying
    if rng.random() < 0.25:
        at = cart(at, None)
    if not will_buy:
        for _ in range(rng.randint(0, return_visits)):
            at += timedelta(days=rng.expovariate(1 / 40))
            if at >= end_at:
                break
            at = browse(at)
        return
    order_number = 0
    at += timedelta(hours=rng.random() * 48)
    while at < end_at:
        at = browse(at)
        if rng.random() < 0.2:
            at = cart(at, None)
        at = cart(at, order_number)
        order_number += 1
        if order_number > 1 and rng.random() < dropout:
            break
        # A near-zero rate draws gaps of millennia; anything past the history is the same.
        gap_days = rng.expovariate(rate) if rate > 0 else HISTORY_DAYS
        at += timedelta(days=min(gap_days, HISTORY_DAYS))


def _product_props(
    product: _Product, money: Callable[[float], str], currency: str, scale: float = 1.0
) -> dict:
    return {
        "product_id": product.product_id,
        "sku": product.sku,
        "name": product.name,
        "category": product.category,
        "price": money(product.usd_price * scale),
        "currency": currency,
    }
