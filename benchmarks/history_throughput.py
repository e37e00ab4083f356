"""Is the cost of storing an event flat as history grows? `cdp load` per million events.

Generates a synthetic store (``--customers``, default 2,000,000: about 20 million
events), then loads it with ``load_file`` in a child process — one long backfill into one
database, as a store migrating its history would run it — and prints, for every
million events stored, the rate of that slice, its ratio to the first slice's, and
the process's resident memory (now and peak). Issue 17's limits: the 10th million
at ≥ 0.8x the first's rate, and peak RSS under 2 GB whatever the history.

    python benchmarks/history_throughput.py [--customers N] [--store FILE] [--keep]

The store takes ~0.37 GB of JSON lines per million events and the database about as
much again; both go to a temporary folder (``--keep`` keeps them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

from cdp.ingest.generator import generate_store
from cdp.settings import IngestSettings

# The child: load the file, and at every million events stored print one JSON line.
_CHILD = r"""
import json, sys, time
from pathlib import Path
from cdp.ingest.loader import load_file
from cdp.ingest.validation import ValidationLimits
from cdp.storage.database import connect

def memory():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return [int(fields[key].split()[0]) * 1024 for key in ("VmRSS", "VmHWM")]

store, db, memory_limit = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
state = {"next": 1_000_000, "at": time.perf_counter(), "stored": 0}

def progress(stats):
    done = stats.consumed
    while done >= state["next"]:
        now = time.perf_counter()
        rss, peak = memory()
        print(json.dumps({"events": done, "seconds": now - state["at"], "rss": rss,
                          "peak": peak}), flush=True)
        state["next"] += 1_000_000
        state["at"] = now

with connect(db, memory_limit=memory_limit) as con:
    print(json.dumps({"memory_limit": con.execute(
        "SELECT current_setting('memory_limit')").fetchone()[0]}), flush=True)
    load_file(con, store, limits=ValidationLimits(), progress=progress)
rss, peak = memory()
print(json.dumps({"done": True, "rss": rss, "peak": peak}), flush=True)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2_000_000)
    parser.add_argument("--store", type=Path, help="a store file to load instead")
    parser.add_argument("--keep", action="store_true", help="keep the store and database")
    parser.add_argument(
        "--memory-limit", default=IngestSettings().memory_limit, help="DuckDB's, for the load"
    )
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="cdp-history-"))
    store = args.store
    if store is None:
        store = folder / "store.jsonl"
        started = time.perf_counter()
        report = generate_store(store, customers=args.customers, seed=7, end=date(2026, 11, 1))
        print(
            f"generated {report.events:,} events in {time.perf_counter() - started:.0f} s "
            f"({store.stat().st_size / 1e9:.1f} GB)",
            flush=True,
        )
    db = folder / "history.duckdb"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(store), str(db), args.memory_limit],
        stdout=subprocess.PIPE,
        text=True,
    )
    print(f"{'million':>7}  {'events/s':>9}  {'vs 1st':>6}  {'RSS MB':>7}  {'peak MB':>7}")
    first_rate = None
    rates: list[float] = []
    peak = 0
    for line in child.stdout:
        row = json.loads(line)
        if "memory_limit" in row:
            print(f"DuckDB memory_limit: {row['memory_limit']}", flush=True)
            continue
        peak = max(peak, row["peak"])
        if row.get("done"):
            break
        rate = 1_000_000 / row["seconds"]
        rates.append(rate)
        first_rate = first_rate or rate
        print(
            f"{row['events'] // 1_000_000:>7}  {rate:>9,.0f}  {rate / first_rate:>6.2f}  "
            f"{row['rss'] / 2**20:>7,.0f}  {row['peak'] / 2**20:>7,.0f}",
            flush=True,
        )
    if child.wait() != 0:
        raise SystemExit(f"the load failed with exit status {child.returncode}")
    if len(rates) >= 11:
        print(f"10th million vs 1st: {rates[9] / rates[0]:.2f} (target >= 0.8)")
        # One slice is ~20 s: on a shared machine a neighbour's burst moves it by a
        # third. Three slices either side say the same with less noise.
        smooth = sum(rates[8:11]) / sum(rates[0:3])
        print(f"millions 9-11 vs 1-3: {smooth:.2f}")
        if len(rates) >= 20:
            last = sum(rates[-10:]) / 10
            print(f"last ten millions vs first ten: {last / (sum(rates[:10]) / 10):.2f}")
    print(f"peak RSS of the load: {peak / 2**30:.2f} GB (target < 2 GB)")
    if args.keep:
        print(f"kept {folder}")
    else:
        for path in folder.iterdir():
            path.unlink()
        os.rmdir(folder)


if __name__ == "__main__":
    main()
