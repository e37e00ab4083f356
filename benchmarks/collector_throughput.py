"""Collector throughput: raw kafka-python produce vs. `cdp collect` answering 200 over HTTP.

Starts the bundled broker, builds Segment batches of 100 events as
segment-analytics-python makes them (its own Client builds every event; the body is
``{"batch", "sentAt", "writeKey"}`` serialized as the SDK does, HTTP Basic auth), then
in the same run measures
  (a) a raw kafka-python produce of the same events (one KafkaProducer in this
      process, acks="all", the collector's linger and batch size, each event's bytes
      as the SDK sent them, keyed and routed as the collector does; flush at the end);
  (b) `cdp collect`, a separate process as in production, driven at full load by N
      keep-alive connections (closed loop) from ONE client process (asyncio + aiohttp
      on uvloop); only 200 answers count, each one meaning Kafka acknowledged all 100
      events;
  (c) the collector again at half of (b)'s rate, open loop (Poisson arrivals, latency
      counted from the scheduled send time, so queueing is not hidden).
CPU is read from /proc for the collector, the broker and the client over each
measured window. Everything shares this machine's cores: the client's and the
broker's CPU are printed so the reader can see what the collector competed with.

    python benchmarks/collector_throughput.py [--connections 32] [--duration 20]
        [--warmup 3] [--batches 1000] [--raw-events 200000]

The collector runs with the default ``collector.workers`` (2 processes, one per core
here); ``CDP_COLLECTOR__WORKERS=1`` measures one process. Its CPU is read over the
process and its workers.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from kafka import KafkaProducer

from cdp.ingest.broker import free_port, local_broker
from cdp.ingest.events import FAMILY_OF_TYPE, UnknownEventType, canonical_type
from cdp.ingest.topics import create_topics
from cdp.settings import Settings, load_settings

WRITE_KEY = "wk_bench_0123456789"
EVENTS_PER_BATCH = 100
CLOCK_TICK = os.sysconf("SC_CLK_TCK")

# --------------------------------------------------------------------------- events

PRODUCTS = [
    ("Apparel", "Trail Running Shoe", "Northwind", 89.0),
    ("Apparel", "Merino Base Layer", "Fjellbu", 64.5),
    ("Outdoor", "Ultralight Tent 2P", "Summit & Co", 349.0),
    ("Outdoor", "Headlamp 400lm", "Lumen", 39.99),
    ("Kitchen", "Pour-over Kettle", "Brewhaus", 54.0),
    ("Kitchen", "Cast Iron Skillet 26cm", "Ferro", 42.0),
    ("Home", "Linen Duvet Cover", "Atelier Nord", 129.0),
    ("Electronics", "Wireless Earbuds", "Sonique", 79.0),
]
PAGES = [("Home", "/"), ("Category", "/c/outdoor"), ("Product", "/p/"), ("Cart", "/cart")]


def _product(rng: random.Random) -> dict:
    category, name, brand, price = rng.choice(PRODUCTS)
    product_id = f"prod_{rng.randrange(10_000, 99_999)}"
    return {
        "product_id": product_id,
        "sku": f"SKU-{product_id[5:]}-{rng.choice('SMLX')}",
        "category": category,
        "name": name,
        "brand": brand,
        "variant": rng.choice(["black", "blue", "green", "natural"]),
        "price": price,
        "quantity": 1,
        "currency": "USD",
        "position": rng.randrange(1, 24),
        "url": f"https://shop.example/p/{product_id}",
        "image_url": f"https://cdn.shop.example/img/{product_id}.jpg",
    }


def make_batches(count: int, seed: int = 1) -> list[list[dict]]:
    """``count`` batches of 100 events, each built by segment-analytics-python's own
    Client (send=False), so the fields, their order and formats are the SDK's."""
    from segment.analytics.client import Client

    sdk = Client(WRITE_KEY, send=False)
    rng = random.Random(seed)
    start = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    users = [(f"user_{n:06d}", str(uuid.UUID(int=rng.getrandbits(128)))) for n in range(5000)]
    batches = []
    for b in range(count):
        at = start + timedelta(seconds=b)
        batch = []
        for n in range(EVENTS_PER_BATCH):
            user_id, anonymous_id = rng.choice(users)
            user_id = user_id if rng.random() < 0.6 else None
            when = at + timedelta(milliseconds=5 * n)
            ids = {"user_id": user_id, "anonymous_id": anonymous_id, "timestamp": when}
            ids["message_id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            roll = rng.random()
            if roll < 0.45:
                _, msg = sdk.track(event="Product Viewed", properties=_product(rng), **ids)
            elif roll < 0.60:
                props = {"cart_id": f"cart_{anonymous_id[:8]}", **_product(rng)}
                _, msg = sdk.track(event="Product Added", properties=props, **ids)
            elif roll < 0.67:
                products = [_product(rng) for _ in range(rng.randint(1, 3))]
                subtotal = round(sum(p["price"] for p in products), 2)
                props = {
                    "checkout_id": f"chk_{rng.getrandbits(40):x}",
                    "order_id": f"ord_{rng.getrandbits(40):x}",
                    "affiliation": "Online Store",
                    "total": round(subtotal * 1.08 + 4.95, 2),
                    "subtotal": subtotal,
                    "revenue": subtotal,
                    "shipping": 4.95,
                    "tax": round(subtotal * 0.08, 2),
                    "discount": 0,
                    "coupon": rng.choice(["", "WELCOME10"]),
                    "currency": "USD",
                    "products": products,
                }
                _, msg = sdk.track(event="Order Completed", properties=props, **ids)
            elif roll < 0.77:
                ids["user_id"] = ids["user_id"] or f"user_{rng.randrange(5000):06d}"
                first, last = rng.choice(["Ada", "Lin", "Sam", "Noor"]), rng.choice(["Berg", "Ng"])
                traits = {
                    "email": f"{first.lower()}.{last.lower()}{rng.randrange(999)}@example.com",
                    "first_name": first,
                    "last_name": last,
                    "phone": f"+1-555-{rng.randrange(1000, 9999)}",
                    "address": {
                        "street": f"{rng.randrange(1, 999)} Market St",
                        "city": "Springfield",
                        "postal_code": f"{rng.randrange(10000, 99999)}",
                        "country": "US",
                    },
                    "plan": rng.choice(["free", "plus"]),
                    "created_at": "2025-03-14T10:00:00Z",
                }
                _, msg = sdk.identify(traits=traits, **ids)
            else:
                name, path = rng.choice(PAGES)
                url = f"https://shop.example{path}"
                props = {
                    "path": path,
                    "referrer": "https://www.google.com/",
                    "search": "",
                    "title": f"{name} | Shop",
                    "url": url,
                }
                _, msg = sdk.page(category="Store", name=name, properties=props, **ids)
            batch.append(msg)
        batches.append(batch)
    return batches


def request_body(batch: list[dict], sent_at: datetime) -> bytes:
    """The body exactly as segment-analytics-python serializes it (stdlib json)."""
    return json.dumps({"batch": batch, "sentAt": sent_at.isoformat(), "writeKey": WRITE_KEY})


def topic_of(event: dict, settings: Settings) -> str:
    name = event["event"] if event["type"] == "track" else event["type"]
    try:
        return settings.topics.by_family()[FAMILY_OF_TYPE[canonical_type(name)].value]
    except UnknownEventType:
        return settings.topics.browse


# ------------------------------------------------------------------------ cpu and misc


def cpu_seconds(pid: int) -> float:
    """user + system CPU of a process (all its threads) and of its live descendants
    (the collector's worker processes) from /proc."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rpartition(")")[2].split()
    own = (int(fields[11]) + int(fields[12])) / CLOCK_TICK  # utime, stime
    return own + sum(cpu_seconds(child) for child in _children(pid))


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in task.read_text().split()]
        except OSError:  # the thread ended meanwhile
            continue
    return found


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


# ------------------------------------------------------------------------ (a) raw


def raw_produce(options: dict) -> dict:
    """One KafkaProducer, acks=all, sending every message then flushing: events/s."""
    with open(options["messages"], "rb") as handle:
        messages: list[tuple[str, bytes, bytes]] = pickle.load(handle)
    # The input is not the producer's working set: keep the collector from scanning it.
    gc.freeze()
    producer = KafkaProducer(
        bootstrap_servers=options["bootstrap"],
        acks="all",
        linger_ms=2,  # as the collector's producer (ingest/collector/delivery.py)
        batch_size=256 * 1024,
        max_request_size=1024 * 1024,
    )
    for topic in options["topics"]:
        producer.partitions_for(topic)
    failures: list[BaseException] = []
    print("window-start", flush=True)
    cpu0, started = sum(os.times()[:2]), time.perf_counter()
    send = producer.send
    for topic, key, value in messages:
        send(topic, value=value, key=key).add_errback(failures.append)
    producer.flush()
    elapsed = time.perf_counter() - started
    cpu = sum(os.times()[:2]) - cpu0
    print("window-end", flush=True)
    producer.close()
    assert not failures, failures[:3]
    return {"events": len(messages), "seconds": elapsed, "producer_cpu": cpu}


# ------------------------------------------------------------------------ the client


async def _client_main(options: dict) -> dict:
    import aiohttp

    with open(options["bodies"], "rb") as handle:
        bodies: list[bytes] = pickle.load(handle)
    url = options["url"] + "/v1/batch"
    connections, warmup, duration = options["connections"], options["warmup"], options["duration"]
    rate = options.get("rate")  # requests/s for the open loop; None: closed loop
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "analytics-python/2.4.0",
        "Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode(),
    }
    statuses: dict[str, int] = {}
    latencies: list[float] = []
    counted = {"ok": 0, "events": 0}
    connector = aiohttp.TCPConnector(limit=connections, keepalive_timeout=120)
    timeout = aiohttp.ClientTimeout(total=60)
    now = time.perf_counter  # uvloop's loop.time() ticks in whole milliseconds
    t0 = now()
    window_start, window_end = t0 + warmup, t0 + warmup + duration
    cpu: dict[str, float] = {}

    async def mark(at: float, name: str) -> None:
        await asyncio.sleep(max(0.0, at - now()))
        cpu[name] = sum(os.times()[:2])
        print(name, flush=True)  # the parent samples the collector's CPU now

    async def post(session: aiohttp.ClientSession, body: bytes, since: float) -> None:
        try:
            async with session.post(url, data=body, headers=headers) as answer:
                await answer.read()
                status = str(answer.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            status = type(exc).__name__
        done = now()
        if window_start <= done < window_end:
            statuses[status] = statuses.get(status, 0) + 1
            if status == "200":
                counted["ok"] += 1
                counted["events"] += EVENTS_PER_BATCH
            if since >= window_start:
                latencies.append(done - since)

    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, skip_auto_headers=("Accept-Encoding",)
    ) as session:
        marks = [
            asyncio.create_task(mark(window_start, "window-start")),
            asyncio.create_task(mark(window_end, "window-end")),
        ]
        if rate is None:  # closed loop: each connection sends again as soon as answered

            async def worker(offset: int) -> None:
                i = offset
                while now() < window_end:
                    await post(session, bodies[i % len(bodies)], now())
                    i += connections

            await asyncio.gather(*(worker(n) for n in range(connections)))
        else:  # open loop: Poisson arrivals; a send waits for a free connection
            rng, tasks, i, at = random.Random(7), set(), 0, t0
            while at < window_end:
                at += rng.expovariate(rate)
                await asyncio.sleep(max(0.0, at - now()))
                task = asyncio.create_task(post(session, bodies[i % len(bodies)], at))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
            await asyncio.gather(*tasks)
        await asyncio.gather(*marks)
    latencies.sort()
    return {
        "events": counted["events"],
        "requests_ok": counted["ok"],
        "statuses": statuses,
        "seconds": duration,
        "p50": percentile(latencies, 0.50),
        "p99": percentile(latencies, 0.99),
        "max": latencies[-1] if latencies else float("nan"),
        "client_cpu": cpu["window-end"] - cpu["window-start"],
    }


def child_process() -> None:
    options = json.loads(sys.argv[2])
    if sys.argv[1] == "--raw-process":
        print("result " + json.dumps(raw_produce(options)), flush=True)
        return
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(_client_main(options))
    print("result " + json.dumps(result), flush=True)


def drive(options: dict, watch: dict[str, int], role: str = "--client-process") -> dict:
    """Run a client or raw-produce process; sample the watched processes' CPU over
    the window it announces."""
    child = subprocess.Popen(
        [sys.executable, __file__, role, json.dumps(options)],
        stdout=subprocess.PIPE,
        text=True,
    )
    samples: dict[str, dict[str, float]] = {}
    result = None
    for line in child.stdout:
        line = line.strip()
        if line in ("window-start", "window-end"):
            samples[line] = {name: cpu_seconds(pid) for name, pid in watch.items()}
        elif line.startswith("result "):
            result = json.loads(line[len("result ") :])
    if child.wait() != 0 or result is None:
        raise SystemExit(f"the {role[2:]} failed (exit {child.returncode})")
    for name in watch:
        result[f"{name}_cpu"] = samples["window-end"][name] - samples["window-start"][name]
    return result


# ------------------------------------------------------------------------ the collector


def start_collector(work: Path, bootstrap: str) -> tuple[subprocess.Popen, str, Path]:
    config = work / "collector.toml"
    port = free_port()
    config.write_text(
        f"""
[kafka]
bootstrap_servers = "{bootstrap}"

[storage]
db_path = "{work / "unused.duckdb"}"

[service]
listen = ""

[collector]
listen = "127.0.0.1:{port}"

[[collector.sources]]
name = "bench"
write_key = "{WRITE_KEY}"
"""
    )
    log = work / "collector.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "cdp", "--config", str(config), "collect"],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    import urllib.request

    while True:
        if process.poll() is not None:
            raise SystemExit(f"cdp collect exited {process.returncode}: {log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as answer:
                if answer.status == 200:
                    return process, url, log
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def kafka_wait(url: str) -> tuple[float, float, float]:
    """The collector's produce-latency histogram (hand-over to acks): count, sum, and
    how many took over 100 ms, from its /metrics."""
    import urllib.request

    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    found = {"count": 0.0, "sum": 0.0, "le_0.1": 0.0}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == "cdp_collector_kafka_produce_seconds_count":
            found["count"] = float(value)
        elif name == "cdp_collector_kafka_produce_seconds_sum":
            found["sum"] = float(value)
        elif name == 'cdp_collector_kafka_produce_seconds_bucket{le="0.1"}':
            found["le_0.1"] = float(value)
    return found["count"], found["sum"], found["count"] - found["le_0.1"]


def measured(url: str, options: dict, watch: dict[str, int]) -> dict:
    """:func:`drive`, plus the Kafka part of the collector's latency over the run."""
    before = kafka_wait(url)
    result = drive(options, watch)
    count, total, slow = (b - a for a, b in zip(before, kafka_wait(url), strict=True))
    result["kafka_wait_mean"] = total / count if count else float("nan")
    result["kafka_wait_over_100ms"] = slow / count if count else float("nan")
    return result


def stop_collector(process: subprocess.Popen, log: Path) -> str:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    lines = log.read_text(errors="replace").strip().splitlines()
    return f"exit {process.returncode}: {lines[-1] if lines else ''}"


# ------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=32, help="client connections")
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds a load")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first")
    parser.add_argument("--batches", type=int, default=1000, help="distinct request bodies")
    parser.add_argument("--raw-events", type=int, default=200_000, help="events in (a)")
    parser.add_argument(
        "--hold",
        action="store_true",
        help="print the collector's pid and wait for Enter "
        "before the full-load run (to attach a profiler)",
    )
    args = parser.parse_args()

    started = time.perf_counter()
    batches = make_batches(args.batches)
    sent_base = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    bodies = [
        request_body(batch, sent_base + timedelta(seconds=n, milliseconds=520))
        for n, batch in enumerate(batches)
    ]
    body_bytes = [body.encode() for body in bodies]
    events = [event for batch in batches for event in batch]
    kinds: dict[str, int] = {}
    for event in events:
        kind = event.get("event", event["type"])
        kinds[kind] = kinds.get(kind, 0) + 1
    body_size = sum(map(len, body_bytes)) / len(bodies)
    event_size = sum(len(orjson.dumps(e)) for e in events) / len(events)
    mix = ", ".join(f"{k} {v / len(events):.0%}" for k, v in sorted(kinds.items()))
    print(
        f"built {len(bodies):,} batches of {EVENTS_PER_BATCH} events in "
        f"{time.perf_counter() - started:.1f} s: body {body_size:,.0f} bytes on average, "
        f"event {event_size:,.0f} bytes (compact JSON); mix {mix}"
    )

    with tempfile.TemporaryDirectory() as tmp, local_broker() as broker:
        work = Path(tmp)
        settings = load_settings(None, {"kafka": {"bootstrap_servers": broker.bootstrap_servers}})
        create_topics(settings)
        raw_messages = []
        for event in events:
            customer = event.get("userId") or event.get("anonymousId")
            raw_messages.append(
                (topic_of(event, settings), str(customer).encode(), orjson.dumps(event))
            )
        raw_messages = (raw_messages * (args.raw_events // len(raw_messages) + 1))[
            : args.raw_events
        ]
        messages_path = work / "messages.pickle"
        messages_path.write_bytes(pickle.dumps(raw_messages))
        del raw_messages
        topics = list(settings.topics.by_family().values())
        raw = drive(
            {
                "messages": str(messages_path),
                "bootstrap": broker.bootstrap_servers,
                "topics": topics,
            },
            {"broker": broker.process.pid},
            "--raw-process",
        )
        raw_rate = raw["events"] / raw["seconds"]
        print(f"(a) raw produce: {raw_rate:,.0f} events/s {raw}", flush=True)

        bodies_path = work / "bodies.pickle"
        bodies_path.write_bytes(pickle.dumps(body_bytes))
        process, url, log = start_collector(work, broker.bootstrap_servers)
        watch = {"collector": process.pid, "broker": broker.process.pid}
        common = {"url": url, "bodies": str(bodies_path), "connections": args.connections}
        common |= {"warmup": args.warmup, "duration": args.duration}
        try:
            if args.hold:
                input(f"collector pid {process.pid}; press Enter to start the load ")
            full = measured(url, common, watch)
            print(f"(b) full load, {args.connections} connections: {full}", flush=True)
            half_rate = full["requests_ok"] / full["seconds"] / 2
            half = measured(url, {**common, "rate": half_rate}, watch)
            print(f"(c) half load, {half_rate:,.0f} requests/s open loop: {half}", flush=True)
        finally:
            stopped = stop_collector(process, log)
        print(f"collector {stopped}")

    full_rate = full["events"] / full["seconds"]
    half_ev = half["events"] / half["seconds"]

    def per_k(cpu: float, n: int) -> str:
        return f"{cpu / n * 1e6:,.0f} ms" if n else "n/a"

    def share(result: dict, name: str) -> str:
        cpu = result[f"{name}_cpu"]
        return f"{cpu:5.1f} s = {cpu / result['seconds']:4.0%} of a core"

    ms = 1000
    rows = [
        ("raw kafka-python produce", f"{raw_rate:>9,.0f} events/s"),
        (
            "collector, full load",
            f"{full_rate:>9,.0f} events/s  ({args.connections} conns, "
            f"{settings.collector.workers} workers: collector.workers)",
        ),
        ("ratio collector / raw", f"{full_rate / raw_rate:>9.2f}  (target >= 0.70)"),
        ("p50 / p99, full load", f"{full['p50'] * ms:7.1f} / {full['p99'] * ms:.1f} ms"),
        (
            "p50 / p99, half load",
            f"{half['p50'] * ms:7.1f} / {half['p99'] * ms:.1f} ms at {half_ev:,.0f} events/s"
            "  (target p99 < 100 ms)",
        ),
        (
            "Kafka wait in the collector",
            f"mean {full['kafka_wait_mean'] * ms:.1f} ms full, "
            f"{half['kafka_wait_mean'] * ms:.1f} ms half load; over 100 ms: "
            f"{full['kafka_wait_over_100ms']:.1%} full, {half['kafka_wait_over_100ms']:.1%} half",
        ),
        ("CPU per 1000 events", ""),
        ("  raw producer process", per_k(raw["producer_cpu"], raw["events"])),
        ("  broker, raw produce", per_k(raw["broker_cpu"], raw["events"])),
        ("  collector, full load", per_k(full["collector_cpu"], full["events"])),
        ("  collector, half load", per_k(half["collector_cpu"], half["events"])),
        ("  broker, full load", per_k(full["broker_cpu"], full["events"])),
        ("  client, full load", per_k(full["client_cpu"], full["events"])),
        ("CPU over the full-load window", ""),
        ("  collector", share(full, "collector")),
        ("  broker", share(full, "broker")),
        ("  client", share(full, "client")),
        ("non-200 answers (full / half)", f"{_errors(full)} / {_errors(half)}"),
    ]
    print()
    for name, value in rows:
        print(f"{name:<31} {value}")


def _errors(result: dict) -> str:
    bad = {k: v for k, v in result["statuses"].items() if k != "200"}
    return ", ".join(f"{k}: {v}" for k, v in bad.items()) or "none"


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] in ("--client-process", "--raw-process"):
        child_process()
    else:
        main()
