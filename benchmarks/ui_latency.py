"""``cdp ui`` latency on a big store: server time per page, p50/p95/max.

Against an analyst database that already exists (the 1M-customer one:
``benchmarks/build_scale.py --customers 1000000 --workdir DIR --prepare-only``, then
``cdp build --db DIR/store.duckdb``), this starts ``cdp ui`` in a process of its own on
a free loopback port and asks, one request at a time with keep-alive, for

- customer pages of random customers (each page: profile, identifiers, CLV, RFM,
  consent, segments, recommendations, orders, the first timeline page);
- searches by email prefix (the first 9-12 characters of random customers' emails);
- segment pages (members page of a random page number among the first 20 pages,
  random sort, plus the week's changes and traits) of random segments.

Server time is what the app reports in ``Server-Timing`` (from the request's arrival
to the answer's start); the round trip is printed beside it. The target (issue 18):
p95 server time < 150 ms for each kind.

    python benchmarks/ui_latency.py --db DIR/store.duckdb [--requests 300] [--seed 1]
"""

from __future__ import annotations

import argparse
import http.client
import random
import re
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import duckdb

from cdp.ui.queries import MEMBER_SORTS

TARGET_MS = 150.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True, help="live database (or analyst file)")
    parser.add_argument("--requests", type=int, default=300, help="per kind of page")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    analyst = (
        args.db
        if args.db.name.endswith(".analyst.duckdb")
        else (args.db.with_name(f"{args.db.stem}.analyst.duckdb"))
    )
    with duckdb.connect(str(analyst), read_only=True) as con:
        customers = con.execute(
            "SELECT customer_id, emails[1] FROM customer_profiles "
            "ORDER BY hash(customer_id, $seed) LIMIT $n",
            {"n": args.requests, "seed": args.seed},
        ).fetchall()
        segments = con.execute(
            "SELECT segment, count(*) FROM segment_members GROUP BY 1 ORDER BY 1"
        ).fetchall()
        profiles, events = con.execute(
            "SELECT (SELECT count(*) FROM customer_profiles), "
            "(SELECT count(*) FROM customer_events)"
        ).fetchall()[0]
    listed = ", ".join(f"{s} {n:,}" for s, n in segments)
    print(f"{analyst}: {profiles:,} customers, {events:,} customer events; segments {listed}")
    emails = rng.choices([email for _, email in customers if email], k=args.requests)
    paths = {
        "customer page": [f"/customers/{cid}" for cid, _ in customers],
        "email prefix search": [f"/customers?q={quote(e[: rng.randint(9, 12)])}" for e in emails],
        "segment members page": [
            f"/segments/{segment}?sort={rng.choice(list(MEMBER_SORTS))}"
            f"&dir={rng.choice(['asc', 'desc'])}&page={rng.randint(1, max(1, min(20, n // 50)))}"
            for segment, n in rng.choices([s for s in segments if s[1]], k=args.requests)
        ],
    }
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "cdp", "ui", "--db", str(args.db), "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        server.stdout.readline()  # "cdp ui: serving ..." once it listens
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for path in paths["customer page"][:10]:  # warm-up: first opening, caches
            _get(connection, path)
        for kind, kind_paths in paths.items():
            server_ms, round_ms = [], []
            for path in kind_paths:
                status, app_ms, total_ms = _get(connection, path)
                if status not in (200, 303):
                    raise SystemExit(f"{path}: answered {status}")
                server_ms.append(app_ms)
                round_ms.append(total_ms)
            p95 = _percentile(server_ms, 95)
            verdict = "OK" if p95 < TARGET_MS else "OVER TARGET"
            print(
                f"{kind:<22} n={len(server_ms)}  server p50 {statistics.median(server_ms):6.1f} ms"
                f"  p95 {p95:6.1f} ms  max {max(server_ms):6.1f} ms   round trip p95 "
                f"{_percentile(round_ms, 95):6.1f} ms   {verdict} (p95 < {TARGET_MS:.0f} ms)"
            )
    finally:
        server.terminate()
        server.wait(30)


def _get(connection: http.client.HTTPConnection, path: str) -> tuple[int, float, float]:
    started = time.perf_counter()
    connection.request("GET", path)
    answer = connection.getresponse()
    answer.read()
    total = (time.perf_counter() - started) * 1000
    timing = re.search(r"dur=([0-9.]+)", answer.getheader("Server-Timing", ""))
    return answer.status, float(timing.group(1)) if timing else total, total


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


if __name__ == "__main__":
    main()
