"""The last days of a demo store: fresh first orders and carts still open.

``cdp generate``'s store is pinned byte for byte (tests and
``benchmarks/generate_throughput.py --check`` hold its SHA-256), and its visitors'
stories end well before the store's last moment, so a build as of then finds no
first purchase in the last 14 days and no cart touched in the last 24 hours: the
``welcome`` and ``abandoned_cart`` segments stay empty, and a demo looks frozen.
``cdp demo`` appends these few events to the generated file instead of changing the
generator: new visitors who sign up and make their first order over the last 13
days, and others who sign up and leave a cart within the last 20 hours. Seeded, so
a demo's store is the same for the same seed and moment.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from pathlib import Path

_CATEGORIES = ("cakes", "bread", "chocolate", "coffee", "tea", "gift boxes")


def recent_people(customers: int) -> tuple[int, int]:
    """(first orders, open carts) for a store of ``customers``: 1.5% and 1.25% of it
    (30 and 25 in the 2,000-customer demo), at least one of each."""
    return max(1, round(customers * 0.015)), max(1, round(customers * 0.0125))


def append_recent_activity(path: Path, *, customers: int, seed: int, until: datetime) -> int:
    """Append the events to the JSON-lines file ``path`` (a store of ``customers``);
    return how many. Every event happens before ``until`` (give the moment the demo
    builds as of, or earlier)."""
    first_orders, open_carts = recent_people(customers)
    rng = random.Random(f"recent-{seed}")
    lines: list[dict] = []
    for n in range(first_orders + open_carts):
        buyer = n < first_orders
        person = f"recent-{seed}-{n:04d}"
        ids = {"anonymous_id": f"anon-{person}", "user_id": f"user-{person}"}
        # First orders over the last 13 days; open carts over the last 20 hours.
        start = until - (
            timedelta(days=rng.uniform(0.5, 13)) if buyer else timedelta(hours=rng.uniform(2, 20))
        )
        product = rng.randrange(1, 240)
        category = rng.choice(_CATEGORIES)
        price = f"{rng.uniform(5, 80):.2f}"
        item = {
            "product_id": f"p-{product:04d}",
            "sku": f"SKU-{product:05d}",
            "name": f"{category.title()} #{product}",
            "category": category,
            "price": price,
            "currency": "USD",
            "quantity": 1,
        }
        cart = f"cart-{person}"
        steps = [("product_viewed", {"anonymous_id": ids["anonymous_id"], "properties": item})]
        traits = {
            "email": f"new.customer.{seed}.{n}@example.com",
            "consent": {"email": True, "sms": False, "ads": rng.random() < 0.5},
        }
        steps.append(("identify", {**ids, "traits": traits}))
        steps.append(("product_added", {**ids, "properties": {**item, "cart_id": cart}}))
        if buyer:
            steps.append(("checkout_started", {**ids, "properties": {"cart_id": cart}}))
            order = {"order_id": f"ord-{person}", "cart_id": cart, "total": price}
            order |= {"currency": "USD", "products": [item]}
            steps.append(("order_completed", {**ids, "properties": order}))
        for minute, (kind, fields) in enumerate(steps):
            lines.append(
                {
                    "event_id": f"evt-{person}-{minute}",
                    "type": kind,
                    "timestamp": (start + timedelta(minutes=minute)).isoformat(
                        timespec="milliseconds"
                    ),
                    **fields,
                    "context": {"channel": "web", "locale": "en-US"},
                }
            )
    with path.open("ab") as out:
        for line in lines:
            out.write(json.dumps(line, separators=(",", ":")).encode() + b"\n")
    return len(lines)
