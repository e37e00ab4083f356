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

The same seed, customer count and end date give the same file, byte for byte, and the
same file as the generator before issue 17 made it ~4x faster (its draws and layout were
kept exactly; tests/ingest/test_generator.py holds it to digests taken before).
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import BinaryIO

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
    catalog = _catalog(rng)
    report = GenerateReport(customers=customers)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        _simulate(
            out,
            rng,
            seed=seed,
            catalog=catalog,
            end=end or date.today(),
            report=report,
            customers=customers,
            buyer_share=buyer_share,
            return_visits=return_visits,
            progress=progress,
        )
    return report


# How the file is written fast, and still the same bytes as the straightforward version
# (one event dict per event, json.dumps, datetime arithmetic, random.randint/choice/sample):
#
# * Draws. Every draw is the one the random module would make, in the same order: random()
#   and getrandbits() of the same Random object, with randint, randrange, choice, choices
#   and sample written out as random.py (the same in 3.11, 3.12 and 3.13) implements them,
#   _randbelow being "getrandbits(n.bit_length()) until below n". The rare draws (gamma,
#   beta, lognormal, exponential) still call the Random methods.
# * Times are integer microseconds since the history's first midnight (UTC). A datetime
#   plus a timedelta is exact integer arithmetic in microseconds, and a float timedelta is
#   converted by timedelta itself, so the instants are the same; the isoformat(timespec=
#   "milliseconds") text is rebuilt from a day cache and tables of "HH:MM:SS." and
#   "mmm+00:00" (milliseconds truncated, as isoformat does).
# * Lines are built as strings in json.dumps's own layout (separators "," and ":", keys in
#   insertion order). Every value is ASCII with no quote, backslash or control character,
#   so no escaping is needed; product fragments per currency and each customer's id and
#   context tail are built once. Only a malformed line (0.4%) goes through a dict again:
#   json.loads of its line gives back the event dict, which is broken as before.
# * Lines are joined and written 64k at a time.

_SECOND = 1_000_000  # microseconds
_HOUR = 3600 * _SECOND
_DAY = 86_400 * _SECOND
_ONE_MICROSECOND = timedelta(microseconds=1)
_FLUSH_LINES = 1 << 16
_PAGE_PROPERTIES = '{"url":"https://shop.example/","path":"/"}'
_SEARCH_WORDS = ("gift", "sale", "new")
_CANONICAL_HEAD = {t: f'","type":"{t}","timestamp":"' for t in _SEGMENT_NAMES}
_SEGMENT_HEAD = {
    t: f'","type":"track","event":"{name}","timestamp":"' for t, name in _SEGMENT_NAMES.items()
}
_CURRENCY_CUMULATIVE = list(itertools.accumulate(c[2] for c in CURRENCIES))
_CURRENCY_TOTAL = _CURRENCY_CUMULATIVE[-1] + 0.0
_JSON_BOOL = {True: "true", False: "false"}


class _Days(dict):
    """Day number since ``first`` -> "YYYY-MM-DDT", filled on first use."""

    def __init__(self, first: date) -> None:
        super().__init__()
        self._first = first.toordinal()

    def __missing__(self, day: int) -> str:
        text = self[day] = date.fromordinal(self._first + day).isoformat() + "T"
        return text


def _micros(delta: timedelta) -> int:
    return delta // _ONE_MICROSECOND


def _simulate(
    out: BinaryIO,
    rng: random.Random,
    *,
    seed: int,
    catalog: list[_Product],
    end: date,
    report: GenerateReport,
    customers: int,
    buyer_share: float,
    return_visits: int,
    progress: Callable[[int], None] | None,
) -> None:
    _check_needs_no_escaping()
    random_ = rng.random
    getrandbits = rng.getrandbits

    def below(n: int) -> int:  # random.Random._randbelow
        k = n.bit_length()
        r = getrandbits(k)
        while r >= n:
            r = getrandbits(k)
        return r

    def randint(a: int, b: int) -> int:  # random.Random.randint
        n = b - a + 1
        k = n.bit_length()
        r = getrandbits(k)
        while r >= n:
            r = getrandbits(k)
        return a + r

    # random.Random.sample(catalog, 6) and sample(catalog, 1) take the set-tracking branch
    # (population larger than 21 + 4 ** ceil(log(k * 3, 4)), 85 for k = 6).
    catalog_size = len(catalog)
    if catalog_size <= 85:
        raise ValueError("the catalog must hold more than 85 products")
    catalog_bits = catalog_size.bit_length()
    category_of = [p.category for p in catalog]
    out_of_range = bytes(catalog_size) + b"\x01" * ((1 << catalog_bits) - catalog_size)
    prices = [p.usd_price for p in catalog]

    # Instants are microseconds since the history's first midnight (small enough that the
    # second of the history is a one-digit int, the fast kind).
    start_at = 0
    end_at = HISTORY_DAYS * _DAY
    last_at = end_at - _SECOND
    span_s = timedelta(microseconds=end_at - start_at).total_seconds()
    days = _Days(end - timedelta(days=HISTORY_DAYS))
    clock = [f"{h:02d}:{m:02d}:{s:02d}." for h in range(24) for m in range(60) for s in range(60)]
    millis = [f'{ms:03d}+00:00"' for ms in range(1000)]
    event_id = f"evt-{seed:x}-"
    canonical_head, segment_head = _CANONICAL_HEAD, _SEGMENT_HEAD
    segment_share, malformed_share = SEGMENT_SHAPE_SHARE, MALFORMED_SHARE
    resend_below = MALFORMED_SHARE + RESEND_SHARE
    by_type = report.by_type
    count_of = by_type.get
    pending: list[str] = []
    append = pending.append
    counter = 0

    # Product fragments, per currency: '"product_id":…,"price":"12.34","currency":"USD"'.
    product_head = [
        f'"product_id":"{p.product_id}","sku":"{p.sku}","name":"{p.name}",'
        f'"category":"{p.category}","price":"'
        for p in catalog
    ]
    viewed_by_currency: dict[str, list[str]] = {}
    added_by_currency: dict[str, list[str]] = {}
    for code, rate_, _ in CURRENCIES:
        fragments = [
            f'{head}{_money(price * 1.0, rate_, code)}","currency":"{code}"'
            for head, price in zip(product_head, prices, strict=True)
        ]
        viewed_by_currency[code] = ["{" + f + "}" for f in fragments]
        added_by_currency[code] = ["{" + f + ',"quantity":' for f in fragments]

    by_favourite = {
        c: (
            f'{{"category":"{c}","list_id":"{c}"}}',
            tuple(f'{{"query":"{word}"}}' for word in (c, *_SEARCH_WORDS)),
        )
        for c in CATEGORIES
    }

    # Per customer (cells the functions below read).
    index = 0
    anonymous_id = context = user_id = ""
    canonical_tail = segment_tail = ""
    currency, fx, vnd = "USD", 1.0, False
    favourite = ""
    spend_scale = 1.0
    viewed: list[str] = []
    added: list[str] = []
    list_properties = ""
    search_properties: tuple[str, ...] = ()

    def flush() -> None:
        if pending:
            append("")
            out.write("\n".join(pending).encode())
            pending.clear()

    def malformed(line: str) -> None:
        report.malformed += 1
        broken = _malform(rng, json.loads(line), line.encode())
        if broken.isascii():
            append(broken.decode())
        else:  # not UTF-8: written as bytes, in its place
            flush()
            out.write(broken + b"\n")

    def emit(event_type: str, at: int, properties: str) -> None:
        nonlocal counter
        counter += 1
        second = at // _SECOND
        if random_() < segment_share:
            line = (
                f'{{"messageId":"{event_id}{counter:09x}{segment_head[event_type]}'
                f"{days[second // 86400]}{clock[second % 86400]}{millis[at % _SECOND // 1000]}"
                f"{segment_tail}{properties}}}"
            )
        else:
            line = (
                f'{{"event_id":"{event_id}{counter:09x}{canonical_head[event_type]}'
                f"{days[second // 86400]}{clock[second % 86400]}{millis[at % _SECOND // 1000]}"
                f"{canonical_tail}{properties}}}"
            )
        by_type[event_type] = count_of(event_type, 0) + 1
        roll = random_()
        if roll < resend_below:
            if roll < malformed_share:
                malformed(line)
                return
            append(line)  # a producer retry: same event_id, sent twice
            report.resent += 1
        append(line)

    def money(usd: float) -> str:
        value = usd * fx
        return f"{round(value):d}" if vnd else f"{value:.2f}"

    def pick() -> int:
        """The product a customer looks at: of six, the first in their favourite category."""
        taken = bytearray(out_of_range)  # a draw is redrawn if out of range or taken
        first = -1
        for _ in range(6):
            j = getrandbits(catalog_bits)
            while taken[j]:
                j = getrandbits(catalog_bits)
            taken[j] = 1
            if first < 0 and category_of[j] == favourite:
                first = j
        if first >= 0:
            return first
        j = getrandbits(catalog_bits)
        while j >= catalog_size:
            j = getrandbits(catalog_bits)
        return j

    def browse(at: int) -> int:
        emit("page_viewed", at, _PAGE_PROPERTIES)
        at += randint(5, 90) * _SECOND
        if random_() < 0.5:
            emit("product_list_viewed", at, list_properties)
        if random_() < 0.3:
            at += randint(5, 60) * _SECOND
            emit("products_searched", at, search_properties[below(4)])
        for _ in range(randint(1, 2)):
            product = pick()
            at += randint(10, 240) * _SECOND
            emit("product_viewed", at, viewed[product])
        return at

    def identify(at: int) -> None:
        nonlocal user_id, canonical_tail, segment_tail, counter
        user_id = f"user-{seed:x}-{index:07d}"
        canonical_tail = (
            f',"anonymous_id":"{anonymous_id}","user_id":"{user_id}","context":{context},'
            '"properties":'
        )
        segment_tail = (
            f',"userId":"{user_id}","anonymousId":"{anonymous_id}","context":{context},'
            '"properties":'
        )
        traits = (
            f'{{"email":"Customer.{index}@Example.com ","first_name":"Customer",'
            f'"last_name":"{index}"'
        )
        if random_() < 0.6:
            # Unique per customer (up to 10M): shared numbers would merge customers.
            traits += (
                f',"phone":"+1 (5{index // 10**6 % 10}{index // 10**4 % 100:02d}) '
                f'{index % 10**4:04d}"'
            )
        if random_() < 0.5:
            traits += (
                f',"birthday":"{randint(1950, 2004)}-{randint(1, 12):02d}-{randint(1, 28):02d}"'
            )
        email = _JSON_BOOL[random_() < 0.7]
        sms = _JSON_BOOL[random_() < 0.3]
        ads = _JSON_BOOL[random_() < 0.6]
        counter += 1
        second = at // _SECOND
        line = (
            f'{{"event_id":"{event_id}{counter:09x}","type":"identify","timestamp":"'
            f"{days[second // 86400]}{clock[second % 86400]}{millis[at % _SECOND // 1000]}"
            f',"anonymous_id":"{anonymous_id}","user_id":"{user_id}","context":{context},'
            f'"traits":{traits},"consent":{{"email":{email},"sms":{sms},"ads":{ads}}}}}}}'
        )
        by_type["identify"] = count_of("identify", 0) + 1
        roll = random_()
        if roll < resend_below:
            if roll < malformed_share:
                malformed(line)
                return
            append(line)
            report.resent += 1
        append(line)

    def cart(at: int, order_number: int | None) -> int:
        label = "x" if order_number is None else order_number
        cart_id = f"cart-{seed:x}-{index:07x}-{label}-{below(1 << 20):05x}"
        lines = []
        for _ in range(1 if random_() < 0.6 else randint(2, 4)):
            product = pick()
            quantity = 1 if random_() < 0.8 else randint(2, 3)
            at += randint(20, 300) * _SECOND
            emit("product_added", at, f'{added[product]}{quantity},"cart_id":"{cart_id}"}}')
            lines.append((product, quantity))
        if random_() < 0.1 and len(lines) > 1:
            product, quantity = lines.pop()
            at += randint(20, 120) * _SECOND
            emit("product_removed", at, f'{added[product]}{quantity},"cart_id":"{cart_id}"}}')
        at += randint(10, 120) * _SECOND
        cart_properties = f'{{"cart_id":"{cart_id}","currency":"{currency}"}}'
        emit("cart_viewed", at, cart_properties)
        if order_number is None:
            return at  # abandoned
        if not user_id:
            identify(at)
        at += randint(20, 200) * _SECOND
        emit("checkout_started", at, cart_properties)
        order_id = f"ord-{seed:x}-{index:07x}-{order_number}"
        subtotal = sum(prices[product] * quantity for product, quantity in lines) * spend_scale
        discount = round(subtotal * 0.1, 2) if random_() < 0.15 else 0.0
        products = ",".join(
            f'{{{product_head[p]}{money(prices[p] * spend_scale)}","quantity":{q}}}'
            for p, q in lines
        )
        total = money(subtotal - discount)
        properties = (
            f'{{"order_id":"{order_id}","cart_id":"{cart_id}","total":"{total}",'
            f'"discount":"{money(discount)}","currency":"{currency}","products":[{products}]'
        )
        if discount:
            properties += ',"coupon":"WELCOME10"'
        at += randint(30, 300) * _SECOND
        emit("order_completed", at, properties + "}")
        outcome = random_()
        if outcome < 0.04:
            later = min(at + randint(2, 30) * _DAY, last_at)
            emit(
                "order_refunded",
                later,
                f'{{"order_id":"{order_id}","total":"{total}","currency":"{currency}"}}',
            )
        elif outcome < 0.05:
            later = at + randint(1, 20) * _HOUR
            emit(
                "order_cancelled",
                min(later, last_at),
                f'{{"order_id":"{order_id}","total":"{total}","currency":"{currency}"}}',
            )
        return at

    for index in range(customers):
        first_seen = start_at + _micros(timedelta(seconds=random_() * span_s * 0.95))
        anonymous_id = f"anon-{seed:x}-{index:07x}"
        user_id = ""
        currency, fx, _ = CURRENCIES[
            bisect.bisect(_CURRENCY_CUMULATIVE, random_() * _CURRENCY_TOTAL, 0, len(CURRENCIES) - 1)
        ]
        vnd = currency == "VND"
        channel = CHANNELS[below(len(CHANNELS))]
        locale = "en-US" if currency == "USD" else "en-GB"
        source = SOURCES[below(len(SOURCES))]
        if source:
            medium = "cpc" if source == "google" else "social"
            context = (
                f'{{"channel":"{channel}","locale":"{locale}","campaign":{{"source":"{source}",'
                f'"medium":"{medium}","name":"{source}-launch"}}}}'
            )
        else:
            context = f'{{"channel":"{channel}","locale":"{locale}"}}'
        canonical_tail = f',"anonymous_id":"{anonymous_id}","context":{context},"properties":'
        segment_tail = f',"anonymousId":"{anonymous_id}","context":{context},"properties":'
        favourite = CATEGORIES[below(len(CATEGORIES))]
        list_properties, search_properties = by_favourite[favourite]
        viewed, added = viewed_by_currency[currency], added_by_currency[currency]
        # BG/NBD-style heterogeneity: purchase rate per day, and a drop-out chance per order.
        will_buy = random_() < buyer_share
        rate = rng.gammavariate(0.9, 1 / 110) if will_buy else 0.0
        dropout = rng.betavariate(1.2, 3.0)
        spend_scale = rng.lognormvariate(0, 0.6)

        at = browse(first_seen)
        if random_() < 0.25:
            identify(at + 30 * _SECOND)  # signed up without buying
        if random_() < 0.25:
            at = cart(at, None)
        if not will_buy:
            for _ in range(randint(0, return_visits)):
                at += _micros(timedelta(days=rng.expovariate(1 / 40)))
                if at >= end_at:
                    break
                at = browse(at)
        else:
            order_number = 0
            at += _micros(timedelta(hours=random_() * 48))
            while at < end_at:
                at = browse(at)
                if random_() < 0.2:
                    at = cart(at, None)
                at = cart(at, order_number)
                order_number += 1
                if order_number > 1 and random_() < dropout:
                    break
                # A near-zero rate draws gaps of millennia; anything past the history is the
                # same.
                gap_days = rng.expovariate(rate) if rate > 0 else HISTORY_DAYS
                at += _micros(timedelta(days=min(gap_days, HISTORY_DAYS)))
        if len(pending) >= _FLUSH_LINES:
            flush()
        if progress and (index + 1) % 5000 == 0:
            progress(index + 1)
    flush()
    report.events = counter


def _check_needs_no_escaping() -> None:
    """The lines are built without json.dumps: every text put in one must be JSON as is."""
    texts = [*CATEGORIES, *CHANNELS, *_SEGMENT_NAMES, *_SEGMENT_NAMES.values(), *_SEARCH_WORDS]
    texts += [s for s in SOURCES if s] + [c[0] for c in CURRENCIES]
    for text in texts:
        if json.dumps(text) != f'"{text}"':
            raise ValueError(f"{text!r} would need escaping in JSON")


def _money(usd: float, fx: float, currency: str) -> str:
    value = usd * fx
    return f"{round(value):d}" if currency == "VND" else f"{value:.2f}"


def _malform(rng: random.Random, event: dict, line: bytes) -> bytes:
    kind = rng.randrange(7)
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
