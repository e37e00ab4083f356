"""Does `cdp ingest` stay as fast and as small with a long history behind it?

Issue 17 asks that ingesting the 10th (or 20th) million events runs at >= 0.8x the
rate of the first million, and that `cdp ingest` peaks under 2 GB of RSS whatever the
history. This script measures exactly that, with the real commands as a store runs
them:

1. generates a store (``--customers``, default 2,000,000: ~20 million events) and
   splits it into the history (every line but the last ``--tail``) and the tail;
2. `cdp load`s the history into a database (its wall time and peak RSS are printed
   too: the backfill a store migrating its history would run);
3. produces the tail to the bundled broker once;
4. in alternating rounds, runs `cdp ingest --until-idle` of the tail (a new consumer
   group each time) into an empty database, and into a copy of the history database,
   and prints each run's rate (from partition assignment to the last stored batch, as
   the run logs them) and the process's peak RSS (``wait4``), then the ratio of the
   rates side by side.

    python benchmarks/ingest_history.py [--customers N] [--tail N] [--rounds N]
                                        [--workdir DIR]

With ``--workdir`` the store and the history database are kept there and reused by
the next run (delete the folder to start over). It needs ~0.75 GB of disk per million
events of history, twice over during a round (the copy).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime
from pathlib import Path

from cdp.ingest.broker import local_broker
from cdp.ingest.generator import generate_store
from cdp.ingest.producer import produce_file
from cdp.ingest.topics import create_topics
from cdp.settings import load_settings

# `cdp -v ARGS` with kafka-python's own debug logging off: -v logs every fetch of it,
# which costs more than the ingest being measured (25k msg/s instead of 60k+).
_CDP_VERBOSE = (
    "import logging, sys; logging.getLogger('kafka').setLevel(logging.WARNING); "
    "from cdp.cli import main; sys.exit(main(['-v', *sys.argv[1:]]))"
)


def run_cdp(args: list[str], env: dict[str, str], log: Path) -> tuple[float, int]:
    """Run ``cdp -v ARGS``; its wall seconds and peak RSS in bytes (wait4)."""
    started = time.perf_counter()
    with log.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-c", _CDP_VERBOSE, *args],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, **env},
        )
        _, status, usage = os.wait4(process.pid, 0)
    exit_code = os.waitstatus_to_exitcode(status)
    if exit_code != 0:
        sys.exit(f"cdp {' '.join(args)} failed ({exit_code}); see {log}")
    return time.perf_counter() - started, usage.ru_maxrss * 1024


def ingest_rate(log: Path) -> tuple[int, float]:
    """Messages consumed and their rate, from the first 'partitions assigned' to the
    last 'stored a batch' the run logged (so the group join counts against neither)."""
    assigned = last = None
    consumed = 0
    for line in log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        at = datetime.fromisoformat(entry["time"]).timestamp()
        if entry["message"].startswith("partitions assigned") and assigned is None:
            assigned = at
        elif entry["message"].startswith("stored a batch: "):
            consumed, last = int(entry["message"].split()[3]), at
    if assigned is None or last is None or last <= assigned:
        sys.exit(f"could not read a rate from {log}")
    return consumed, consumed / (last - assigned)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2_000_000)
    parser.add_argument("--tail", type=int, default=1_000_000, help="events ingested")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workdir", type=Path, help="keep the store and history here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        history, tail = work / "history.jsonl", work / "tail.jsonl"
        history_db = work / "history.duckdb"
        if not tail.exists():
            store = work / "store.jsonl"
            generate_store(store, customers=args.customers, seed=1, end=date(2026, 11, 1))
            _split(store, history, tail, args.tail)
            store.unlink()
        if not history_db.exists():
            seconds, peak = run_cdp(
                ["load", str(history)],
                {"CDP_STORAGE__DB_PATH": str(history_db)},
                work / "load.log",
            )
            print(f"history: cdp load in {seconds:,.0f} s, peak RSS {peak / 2**30:.2f} GiB")
        stored = _stored_events(history_db)
        print(f"history database: {stored:,} events; tail: {_lines(tail):,} events")

        with local_broker() as broker:
            overrides = {"kafka": {"bootstrap_servers": broker.bootstrap_servers}}
            settings = load_settings(None, overrides)
            create_topics(settings)
            produce_file(settings, tail)
            rates: dict[str, list[float]] = {"empty": [], "history": []}
            for round_ in range(1, args.rounds + 1):
                for name in ("empty", "history"):
                    target = work / "round.duckdb"
                    target.unlink(missing_ok=True)
                    if name == "history":
                        shutil.copyfile(history_db, target)
                    log = work / f"ingest-{name}-{round_}.log"
                    _, peak = run_cdp(
                        ["ingest", "--until-idle"],
                        {
                            "CDP_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap_servers,
                            "CDP_KAFKA__GROUP_ID": f"bench-{name}-{round_}-{time.time_ns()}",
                            "CDP_STORAGE__DB_PATH": str(target),
                        },
                        log,
                    )
                    consumed, rate = ingest_rate(log)
                    rates[name].append(rate)
                    before = stored if name == "history" else 0
                    print(
                        f"round {round_} into {name:>7} ({before:>11,} events before): "
                        f"{consumed:,} messages at {rate:>8,.0f} msg/s, "
                        f"peak RSS {peak / 2**30:.2f} GiB"
                    )
                    target.unlink()
    for round_, (empty, full) in enumerate(zip(rates["empty"], rates["history"], strict=True), 1):
        print(f"round {round_}: ratio history/empty {full / empty:.2f}  (target >= 0.80)")


def _split(store: Path, history: Path, tail: Path, tail_lines: int) -> None:
    total = _lines(store)
    with store.open("rb") as source, history.open("wb") as head, tail.open("wb") as rest:
        for number, line in enumerate(source):
            (head if number < total - tail_lines else rest).write(line)


def _lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 24), b""))


def _stored_events(db: Path) -> int:
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT count(*) FROM events").fetchone()[0]


if __name__ == "__main__":
    main()
