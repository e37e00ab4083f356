"""`cdp load` throughput against DuckDB's own ``read_json`` of the same file (issue 17).

Generates a store with ``cdp generate`` (default 20,000 customers, seed 1, ~356k lines)
or takes ``--file``, then in each round, side by side:

- ``cdp load FILE --db fresh.duckdb`` as a subprocess, timed from start to exit
  (Python start-up, migrations, validation, writes and the final checkpoint): lines/s;
- DuckDB alone: ``CREATE TABLE t AS SELECT * FROM read_json(FILE,
  format='newline_delimited', ignore_errors=true)`` (it skips the malformed lines) in
  a fresh database file, then closed;

and prints both rates in lines of the file per second (the same work: the file) and
their ratio (issue 17's target: >= 0.5), with the events cdp stored and the rows
DuckDB did. ``--store-only`` also times cdp's write alone, in this process: the file's
batches validated ahead (untimed), then a fresh database opened, every batch written
with ``write_batch`` as ``cdp load`` writes it, and closed (its last checkpoint). Its
ratio to ``read_json`` is the most ``cdp load`` could reach if reading, validating and
starting Python cost nothing: a ceiling set by what ``events`` stores (the payload,
zstd, beside ~30 typed columns parsed from it) and how DuckDB writes it.

CPU seconds (all threads; for cdp load the whole process) are printed beside, and
their ratio: on a shared machine they vary less than wall time does. Rounds alternate
the order of the two, as the machine may be shared and noisy; every round is printed.

    python benchmarks/load_throughput.py [--customers N] [--file FILE] [--rounds N]
        [--baseline PYTHON] [--store-only]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import duckdb

from cdp.ingest.generator import generate_store
from cdp.ingest.loader import BATCH_BYTES, BATCH_LINES, _Validating
from cdp.ingest.validation import ValidatedBatch, ValidationLimits
from cdp.settings import IngestSettings, load_settings
from cdp.storage.database import connect
from cdp.storage.event_store import write_batch
from cdp.storage.sql import sql_string


def cdp_load(path: Path, folder: Path, python: str = sys.executable) -> tuple[float, float, str]:
    db = folder / "load.duckdb"
    cpu = _children_cpu()
    started = time.perf_counter()
    done = subprocess.run(
        [python, "-m", "cdp", "load", str(path), "--db", str(db)],
        capture_output=True,
        text=True,
        check=True,
    )
    elapsed = time.perf_counter() - started
    cpu = _children_cpu() - cpu
    db.unlink()
    summary = next(line for line in done.stdout.splitlines() if line.startswith("consumed"))
    return elapsed, cpu, summary


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def validated_ahead(path: Path, ingest: IngestSettings) -> list[ValidatedBatch]:
    """The file's batches as ``cdp load`` validates them (the same cuts and limits)."""
    source = f"file:{path.resolve()}"
    limits = ValidationLimits.from_settings(ingest)
    with (
        path.open("rb") as handle,
        _Validating(handle, source, limits, BATCH_LINES, BATCH_BYTES) as batches,
    ):
        return list(batches)


def store_only(
    batches: list[ValidatedBatch], folder: Path, ingest: IngestSettings
) -> tuple[float, float]:
    """Wall and CPU seconds (every thread of this process) to open a fresh database as
    ``cdp load`` opens it, write the batches as it does, one transaction each, and
    close it."""
    db = folder / "store_only.duckdb"
    cpu = time.process_time()
    started = time.perf_counter()
    with connect(db, memory_limit=ingest.memory_limit) as con:
        for batch in batches:
            write_batch(
                con, batch.events, batch.dead_letters, duplicate_window=ingest.duplicate_window
            )
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    db.unlink()
    return elapsed, cpu


def duckdb_read_json(path: Path, folder: Path) -> tuple[float, float, int]:
    db = folder / "read_json.duckdb"
    cpu = time.process_time()
    started = time.perf_counter()
    con = duckdb.connect(str(db))
    con.execute(
        "CREATE TABLE t AS SELECT * FROM read_json("
        f"{sql_string(str(path))}, format = 'newline_delimited', ignore_errors = true)"
    )
    rows = con.execute("SELECT count(*) FROM t").fetchone()[0]
    con.close()
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    db.unlink()
    return elapsed, cpu, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--file", type=Path, help="a JSON-lines file (default: generate one)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--baseline",
        metavar="PYTHON",
        help="also time `PYTHON -m cdp load` (e.g. the venv of a checkout of another revision)",
    )
    parser.add_argument(
        "--store-only",
        action="store_true",
        help="also time cdp's write alone, of batches validated ahead (the ceiling)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = args.file
        if path is None:
            path = folder / "store.jsonl"
            generate_store(path, customers=args.customers, seed=args.seed, end=date(2026, 11, 1))
        lines = sum(1 for line in path.read_bytes().split(b"\n") if line.strip())
        print(f"{path}: {lines:,} lines, {path.stat().st_size / 1e6:.1f} MB")
        ingest = load_settings().ingest  # as `cdp load` finds them, given no --config
        batches = validated_ahead(path, ingest) if args.store_only else []
        ratios = []
        for round_ in range(1, args.rounds + 1):
            if round_ % 2:
                load_s, load_cpu, summary = cdp_load(path, folder)
                json_s, json_cpu, rows = duckdb_read_json(path, folder)
            else:
                json_s, json_cpu, rows = duckdb_read_json(path, folder)
                load_s, load_cpu, summary = cdp_load(path, folder)
            ratio = json_s / load_s  # = (lines / load_s) / (lines / json_s)
            ratios.append(ratio)
            print(
                f"round {round_}: cdp load {load_s:5.2f} s (cpu {load_cpu:5.2f} s)"
                f" = {lines / load_s:7,.0f} lines/s"
                f" | read_json {json_s:5.2f} s (cpu {json_cpu:5.2f} s)"
                f" = {lines / json_s:7,.0f} lines/s ({rows:,} rows)"
                f" | ratio {ratio:.2f} (cpu {json_cpu / load_cpu:.2f})"
            )
            print(f"         cdp load: {summary}")
            if args.baseline:
                base_s, base_cpu, _ = cdp_load(path, folder, args.baseline)
                print(
                    f"         baseline cdp load {base_s:5.2f} s (cpu {base_cpu:5.2f} s)"
                    f" = {lines / base_s:7,.0f} lines/s | ratio to read_json"
                    f" {json_s / base_s:.2f} (cpu {json_cpu / base_cpu:.2f})"
                )
            if args.store_only:
                store_s, store_cpu = store_only(batches, folder, ingest)
                print(
                    f"         store only {store_s:5.2f} s (cpu {store_cpu:5.2f} s)"
                    f" = {lines / store_s:7,.0f} lines/s | ratio to read_json"
                    f" {json_s / store_s:.2f} (cpu {json_cpu / store_cpu:.2f})"
                )
        print(f"ratio: min {min(ratios):.2f}, max {max(ratios):.2f} (target >= 0.5)")


if __name__ == "__main__":
    main()
